"""The broadcast API's requests and answers as typed values.

Each answer class mirrors one 200 body of the bridge's server API (field for field, as the
README's "Broadcast API" section documents it) and is read with ``from_json``, which refuses a
body of another shape instead of handing back half a report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._shape import (
    bool_field,
    int_field,
    json_object,
    list_field,
    optional_field,
    str_field,
    strings_field,
)

__all__ = [
    "Broadcast",
    "BroadcastReport",
    "BatchReport",
    "ConnectionFailure",
    "SubscriptionReport",
    "DisconnectReport",
    "PresentUser",
    "PresenceReport",
    "OnlineConnection",
    "OnlineReport",
    "HistoryPage",
]


@dataclass(frozen=True)
class Broadcast:
    """One message for ``POST /broadcast``: exactly one target, ``event`` (+ ``data``) or a raw
    ``message``, optional exclusions and an ``id``.

    Fields left ``None`` (and ``all=False``) are not sent. ``id`` is the envelope's id and the
    idempotency key; the client generates a UUID for a message without one, before its first
    attempt, so every retry carries the same id.
    """

    topic: str | None = None
    topics: Sequence[str] | None = None
    user_id: str | None = None
    connection_ids: Sequence[str] | None = None
    all: bool = False
    event: str | None = None
    data: Any = None
    message: Any = None
    exclude_user: str | None = None
    exclude_connection: str | None = None
    id: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The body as sent: only the fields given. The bridge validates it (one target,
        one message) and answers 400 with its own error code when it is wrong."""
        body: dict[str, Any] = {}
        if self.topic is not None:
            body["topic"] = self.topic
        if self.topics is not None:
            body["topics"] = list(self.topics)
        if self.user_id is not None:
            body["user_id"] = self.user_id
        if self.connection_ids is not None:
            body["connection_ids"] = list(self.connection_ids)
        if self.all:
            body["all"] = True
        if self.event is not None:
            body["event"] = self.event
        # `null` is what the bridge assumes for a missing `data` (and a `message` of `null`
        # would be no message at all), so None is simply left out.
        if self.data is not None:
            body["data"] = self.data
        if self.message is not None:
            body["message"] = self.message
        if self.exclude_user is not None:
            body["exclude_user"] = self.exclude_user
        if self.exclude_connection is not None:
            body["exclude_connection"] = self.exclude_connection
        if self.id is not None:
            body["id"] = self.id
        return body


@dataclass(frozen=True)
class BroadcastReport:
    """What one broadcast did (the 200 body of ``POST /broadcast``).

    ``recipients = delivered + gone + failed``. ``offset``/``epoch`` are its place in the
    topic's stream for a topic with history; ``replayed`` is true when this answers a repeat
    of an ``id`` already sent (nothing was sent this time).
    """

    id: str
    recipients: int
    delivered: int
    gone: int
    failed: int
    retries: int
    deadline_reached: bool
    store_failed: bool
    offset: int | None = None
    epoch: str | None = None
    replayed: bool = False

    @classmethod
    def from_json(cls, value: Any) -> BroadcastReport:
        what = "broadcast report"
        body = json_object(value, what)
        return cls(
            id=str_field(body, "id", what),
            recipients=int_field(body, "recipients", what),
            delivered=int_field(body, "delivered", what),
            gone=int_field(body, "gone", what),
            failed=int_field(body, "failed", what),
            retries=int_field(body, "retries", what),
            deadline_reached=bool_field(body, "deadline_reached", what),
            store_failed=bool_field(body, "store_failed", what),
            offset=optional_field(body, "offset", int, what),
            epoch=optional_field(body, "epoch", str, what),
            replayed=bool(optional_field(body, "replayed", bool, what)),
        )


@dataclass(frozen=True)
class BatchReport:
    """One report per message of a batch, in the batch's order."""

    results: list[BroadcastReport]

    @classmethod
    def from_json(cls, value: Any) -> BatchReport:
        body = json_object(value, "batch report")
        return cls(
            results=[
                BroadcastReport.from_json(r) for r in list_field(body, "results", "batch report")
            ]
        )


@dataclass(frozen=True)
class ConnectionFailure:
    """A connection a server-side change could not be applied to, and why (a client
    protocol error code such as ``too_many_topics``, or ``failed``)."""

    connection_id: str
    error: str
    details: str

    @classmethod
    def from_json(cls, value: Any) -> ConnectionFailure:
        what = "connection failure"
        body = json_object(value, what)
        return cls(
            connection_id=str_field(body, "connection_id", what),
            error=str_field(body, "error", what),
            details=str_field(body, "details", what),
        )


def _failures(body: Mapping[str, Any], what: str) -> list[ConnectionFailure]:
    return [ConnectionFailure.from_json(f) for f in list_field(body, "failed", what)]


@dataclass(frozen=True)
class SubscriptionReport:
    """The 200 body of ``POST /subscribe`` and ``POST /unsubscribe``: ``action`` is
    ``subscribed`` or ``unsubscribed``; ``connections`` now hold (or no longer hold) every
    topic, ``not_connected`` were not registered, ``failed`` were left as they were."""

    action: str
    topics: list[str]
    connections: list[str]
    not_connected: list[str]
    failed: list[ConnectionFailure]

    @classmethod
    def from_json(cls, value: Any) -> SubscriptionReport:
        what = "subscription report"
        body = json_object(value, what)
        return cls(
            action=str_field(body, "action", what),
            topics=strings_field(body, "topics", what),
            connections=strings_field(body, "connections", what),
            not_connected=strings_field(body, "not_connected", what),
            failed=_failures(body, what),
        )


@dataclass(frozen=True)
class DisconnectReport:
    """The 200 body of ``POST /disconnect``: ``disconnected`` were closed (or found closed),
    ``not_connected`` were not registered, ``failed`` could not be closed just then (their rows
    are kept: retrying finds them)."""

    disconnected: list[str]
    not_connected: list[str]
    failed: list[ConnectionFailure]

    @classmethod
    def from_json(cls, value: Any) -> DisconnectReport:
        what = "disconnect report"
        body = json_object(value, what)
        return cls(
            disconnected=strings_field(body, "disconnected", what),
            not_connected=strings_field(body, "not_connected", what),
            failed=_failures(body, what),
        )


@dataclass(frozen=True)
class PresentUser:
    """One user subscribed to a topic, with the number of their connections there."""

    user_id: str
    connections: int

    @classmethod
    def from_json(cls, value: Any) -> PresentUser:
        what = "present user"
        body = json_object(value, what)
        return cls(
            user_id=str_field(body, "user_id", what),
            connections=int_field(body, "connections", what),
        )


@dataclass(frozen=True)
class PresenceReport:
    """The 200 body of ``GET /presence``: the first 100 users by user id, and totals;
    ``complete`` is false past 1 000 users (the totals then count the first 1 000)."""

    topic: str
    users: list[PresentUser]
    total_users: int
    total_connections: int
    complete: bool

    @classmethod
    def from_json(cls, value: Any) -> PresenceReport:
        what = "presence report"
        body = json_object(value, what)
        return cls(
            topic=str_field(body, "topic", what),
            users=[PresentUser.from_json(u) for u in list_field(body, "users", what)],
            total_users=int_field(body, "total_users", what),
            total_connections=int_field(body, "total_connections", what),
            complete=bool_field(body, "complete", what),
        )


@dataclass(frozen=True)
class OnlineConnection:
    """One live connection of a user; ``connected_at`` in milliseconds since the epoch."""

    connection_id: str
    connected_at: int

    @classmethod
    def from_json(cls, value: Any) -> OnlineConnection:
        what = "online connection"
        body = json_object(value, what)
        return cls(
            connection_id=str_field(body, "connection_id", what),
            connected_at=int_field(body, "connected_at", what),
        )


@dataclass(frozen=True)
class OnlineReport:
    """The 200 body of ``GET /online``: the user's live connections, oldest first."""

    user_id: str
    online: bool
    connections: list[OnlineConnection]

    @classmethod
    def from_json(cls, value: Any) -> OnlineReport:
        what = "online report"
        body = json_object(value, what)
        return cls(
            user_id=str_field(body, "user_id", what),
            online=bool_field(body, "online", what),
            connections=[
                OnlineConnection.from_json(c) for c in list_field(body, "connections", what)
            ],
        )


@dataclass(frozen=True)
class HistoryPage:
    """The 200 body of ``GET /history``: where the topic's stream stands (``epoch`` is
    ``None`` while it has kept nothing; ``offset`` is its last message's), the messages as
    they were delivered, oldest first, and ``more`` when more follow the last one.
    ``recovered`` is set only for a read after a position: whether the messages continue
    from it without a gap."""

    topic: str
    epoch: str | None
    offset: int
    messages: list[Any]
    more: bool
    recovered: bool | None = None

    @classmethod
    def from_json(cls, value: Any) -> HistoryPage:
        what = "history page"
        body = json_object(value, what)
        return cls(
            topic=str_field(body, "topic", what),
            epoch=optional_field(body, "epoch", str, what),
            offset=int_field(body, "offset", what),
            messages=list_field(body, "messages", what),
            more=bool_field(body, "more", what),
            recovered=optional_field(body, "recovered", bool, what),
        )


def connection_count_from_json(value: Any) -> int:
    """The count of ``GET /connections/count``'s ``{"count": N}``."""
    return int_field(json_object(value, "connection count"), "count", "connection count")
