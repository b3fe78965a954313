"""The broadcast API's requests and answers as typed values.

Each answer class mirrors one 200 body of the bridge's server API (field for field, as the
README's "Broadcast API" section documents it) and is read with ``from_json``, which refuses a
body of another shape instead of handing back half a report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ._shape import (
    bool_field,
    choice_field,
    int_field,
    json_object,
    list_field,
    optional_field,
    str_field,
    strings_field,
)

__all__ = [
    "BroadcastState",
    "ShardState",
    "Broadcast",
    "BroadcastReport",
    "BatchReport",
    "ShardStatus",
    "BroadcastStatus",
    "ConnectionFailure",
    "SubscriptionReport",
    "DisconnectReport",
    "PresentUser",
    "PresenceReport",
    "OnlineConnection",
    "OnlineReport",
    "HistoryPage",
]


#: Whether a broadcast has reached everyone it will reach (``"done"``), or parts of it are
#: still being sent in the background (``"running"``).
BroadcastState = Literal["done", "running"]
_BROADCAST_STATES: tuple[BroadcastState, ...] = ("done", "running")

#: Where one background part stands: a runner is sending it (``"running"``), it is between
#: two runs or not yet started (``"waiting"``), nobody has run it for a minute though it is
#: not done (``"stalled"``: reading the status starts it again), or it is ``"done"``.
ShardState = Literal["running", "waiting", "stalled", "done"]
_SHARD_STATES: tuple[ShardState, ...] = ("running", "waiting", "stalled", "done")


@dataclass(frozen=True)
class Broadcast:
    """One message for ``POST /broadcast``: exactly one target, ``event`` (+ ``data``) or a raw
    ``message``, optional exclusions and an ``id``.

    Fields left ``None`` (and ``all=False``, ``background=False``) are not sent. ``id`` is the
    envelope's id and the idempotency key; the client generates a UUID for a message without
    one, before its first attempt, so every retry carries the same id. ``background=True``
    sends the bridge's ``"async": true``: it answers 202 at once and sends everything in
    background parts, however small the audience.
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
    background: bool = False

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
        if self.background:
            body["async"] = True
        return body


@dataclass(frozen=True)
class BroadcastReport:
    """What one broadcast did: the body of ``POST /broadcast``, 200 or 202.

    ``status`` is ``"done"`` (200: every recipient has its outcome) or ``"running"`` (202: the
    bridge sent for its synchronous budget, or nothing with ``background=True``, and handed
    the rest to ``shards`` background parts; the counts are what was sent before that, and
    ``status_url``, relative to the API's base URL, is where ``broadcast_status(id)`` reads how
    far it got). ``recipients = delivered + gone + failed``. ``offset``/``epoch`` are its place
    in the topic's stream for a topic with history; ``replayed`` is true when this answers a
    repeat of an ``id`` already sent (nothing was sent this time; a repeat of a running
    broadcast answers its first, running report).
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
    status: BroadcastState = "done"
    status_url: str | None = None
    shards: int | None = None

    @property
    def running(self) -> bool:
        """Parts of it are still being sent in the background: follow it with
        ``broadcast_status(id)`` or ``wait_for_broadcast(id)``."""
        return self.status == "running"

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
            # A bridge from before background broadcasts answers without it: always done.
            status=(
                choice_field(body, "status", _BROADCAST_STATES, what)
                if "status" in body
                else "done"
            ),
            status_url=optional_field(body, "status_url", str, what),
            shards=optional_field(body, "shards", int, what),
        )


@dataclass(frozen=True)
class BatchReport:
    """One report per message of a batch, in the batch's order; each has its own
    ``status`` (the batch was answered 202 when any of them is running)."""

    results: list[BroadcastReport]

    @property
    def running(self) -> bool:
        """Some member is still being sent in the background (the batch was answered 202):
        ``[r for r in batch.results if r.running]`` are the ones to follow."""
        return any(r.running for r in self.results)

    @classmethod
    def from_json(cls, value: Any) -> BatchReport:
        body = json_object(value, "batch report")
        return cls(
            results=[
                BroadcastReport.from_json(r) for r in list_field(body, "results", "batch report")
            ]
        )


@dataclass(frozen=True)
class ShardStatus:
    """One background part of a broadcast (an entry of ``BroadcastStatus.shards``): its
    counts so far, ``runs`` (invocations that ran it: the first, then one per continuation
    or restart), ``restarts`` (runs that took over from one that died part-way, and may
    have sent again what it sent after its last checkpoint), ``updated_at`` in ms."""

    part: int
    status: ShardState
    recipients: int
    delivered: int
    gone: int
    failed: int
    retries: int
    runs: int
    restarts: int
    updated_at: int

    @classmethod
    def from_json(cls, value: Any) -> ShardStatus:
        what = "broadcast part"
        body = json_object(value, what)
        return cls(
            part=int_field(body, "part", what),
            status=choice_field(body, "status", _SHARD_STATES, what),
            recipients=int_field(body, "recipients", what),
            delivered=int_field(body, "delivered", what),
            gone=int_field(body, "gone", what),
            failed=int_field(body, "failed", what),
            retries=int_field(body, "retries", what),
            runs=int_field(body, "runs", what),
            restarts=int_field(body, "restarts", what),
            updated_at=int_field(body, "updated_at", what),
        )


@dataclass(frozen=True)
class BroadcastStatus:
    """The body of ``GET /broadcasts/{id}``: where a broadcast answered 202 stands.

    The counts are everything so far, the accepting call's own sends and every part's
    (``recipients = delivered + gone + failed``); ``status`` turns ``"done"`` when every part
    is. ``continuations`` counts runs that continued a part before their deadline,
    ``restarts`` runs that took over from one that died. ``created_at``/``updated_at`` are in
    ms since the epoch; ``offset``/``epoch`` as in the broadcast's report.
    """

    id: str
    status: BroadcastState
    recipients: int
    delivered: int
    gone: int
    failed: int
    retries: int
    continuations: int
    restarts: int
    created_at: int
    updated_at: int
    shards: list[ShardStatus]
    offset: int | None = None
    epoch: str | None = None

    @property
    def running(self) -> bool:
        """Some part is not done yet."""
        return self.status == "running"

    @classmethod
    def from_json(cls, value: Any) -> BroadcastStatus:
        what = "broadcast status"
        body = json_object(value, what)
        return cls(
            id=str_field(body, "id", what),
            status=choice_field(body, "status", _BROADCAST_STATES, what),
            recipients=int_field(body, "recipients", what),
            delivered=int_field(body, "delivered", what),
            gone=int_field(body, "gone", what),
            failed=int_field(body, "failed", what),
            retries=int_field(body, "retries", what),
            continuations=int_field(body, "continuations", what),
            restarts=int_field(body, "restarts", what),
            created_at=int_field(body, "created_at", what),
            updated_at=int_field(body, "updated_at", what),
            shards=[ShardStatus.from_json(s) for s in list_field(body, "shards", what)],
            offset=optional_field(body, "offset", int, what),
            epoch=optional_field(body, "epoch", str, what),
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
