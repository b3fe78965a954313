"""One ``Call`` per route of the server API: the request it sends and how its 200 body is
read. Both clients send these; neither builds a request or reads an answer itself."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Callable, Generic, TypeVar
from urllib.parse import quote

from .models import (
    BatchReport,
    Broadcast,
    BroadcastReport,
    BroadcastStatus,
    DisconnectReport,
    HistoryPage,
    OnlineReport,
    PresenceReport,
    SubscriptionReport,
    connection_count_from_json,
)

T = TypeVar("T")


@dataclass(frozen=True)
class Call(Generic[T]):
    """A request of the server API, ready to send as often as it takes."""

    method: str
    path: str
    parse: Callable[[Any], T]
    query: Sequence[tuple[str, str]] = ()
    body: Any = None
    #: The ids of the broadcasts this request sends (reported on failure, to resume them).
    broadcast_ids: Sequence[str] = ()

    def url(self, base_url: str) -> str:
        # Encoded as SigV4 canonicalizes it (every byte but A-Z a-z 0-9 - _ . ~ escaped,
        # keys sorted), so the URL sent is the one signed, byte for byte.
        query = "&".join(
            f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(self.query)
        )
        return f"{base_url}{self.path}" + (f"?{query}" if query else "")

    def content(self) -> bytes | None:
        if self.body is None:
            return None
        # Compact and UTF-8, as the bridge measures messages in bytes.
        return json.dumps(self.body, separators=(",", ":"), ensure_ascii=False).encode()


def with_id(message: Broadcast) -> tuple[Broadcast, str]:
    """The message with an id, and that id: the caller's, or a new UUID (the envelope's id
    and the idempotency key of every attempt)."""
    if message.id is not None:
        return message, message.id
    fresh = str(uuid.uuid4())
    return replace(message, id=fresh), fresh


def broadcast(message: Broadcast) -> Call[BroadcastReport]:
    message, message_id = with_id(message)
    return Call(
        "POST",
        "/broadcast",
        BroadcastReport.from_json,
        body=message.to_json(),
        broadcast_ids=(message_id,),
    )


def batch(messages: Sequence[Broadcast]) -> Call[BatchReport]:
    # Each member its own id: a batch retried after a failure part-way answers the members
    # already sent from their reports and sends the rest.
    members = [with_id(m) for m in messages]
    return Call(
        "POST",
        "/broadcast",
        BatchReport.from_json,
        body={"batch": [m.to_json() for m, _ in members]},
        broadcast_ids=tuple(message_id for _, message_id in members),
    )


def broadcast_status(broadcast_id: str) -> Call[BroadcastStatus]:
    if not broadcast_id:
        raise ValueError("broadcast_status needs a broadcast id")
    # One path segment however many `/` the id holds (ids may hold `/ : @ | + =`): every
    # byte but the unreserved ones escaped, as SigV4 canonicalizes it; the bridge decodes it.
    return Call(
        "GET",
        f"/broadcasts/{quote(broadcast_id, safe='-_.~')}",
        BroadcastStatus.from_json,
    )


def _connections(connection_ids: Sequence[str] | None, user_id: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if connection_ids is not None:
        body["connection_ids"] = list(connection_ids)
    if user_id is not None:
        body["user_id"] = user_id
    return body


def subscription(
    action: str,
    topic: str | None,
    topics: Sequence[str] | None,
    connection_ids: Sequence[str] | None,
    user_id: str | None,
) -> Call[SubscriptionReport]:
    body = _connections(connection_ids, user_id)
    if topic is not None:
        body["topic"] = topic
    if topics is not None:
        body["topics"] = list(topics)
    return Call("POST", f"/{action}", SubscriptionReport.from_json, body=body)


def disconnect(connection_ids: Sequence[str] | None, user_id: str | None) -> Call[DisconnectReport]:
    return Call(
        "POST",
        "/disconnect",
        DisconnectReport.from_json,
        body=_connections(connection_ids, user_id),
    )


def presence(topic: str) -> Call[PresenceReport]:
    return Call("GET", "/presence", PresenceReport.from_json, query=(("topic", topic),))


def online(user_id: str) -> Call[OnlineReport]:
    return Call("GET", "/online", OnlineReport.from_json, query=(("user_id", user_id),))


def history(
    topic: str,
    limit: int | None,
    since_offset: int | None,
    since_epoch: str | None,
) -> Call[HistoryPage]:
    query = [("topic", topic)]
    if limit is not None:
        query.append(("limit", str(limit)))
    if since_offset is not None:
        query.append(("since_offset", str(since_offset)))
    if since_epoch is not None:
        query.append(("since_epoch", since_epoch))
    return Call("GET", "/history", HistoryPage.from_json, query=tuple(query))


def connection_count() -> Call[int]:
    return Call("GET", "/connections/count", connection_count_from_json)
