"""The blocking client."""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any, TypeVar, cast

import httpx

from . import _calls as calls
from ._calls import Call
from ._driver import Done, Settings, advance
from ._exchange import Sleep
from ._waiting import Waiting
from .auth import Auth
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
)
from .retry import RETRYABLE_TRANSPORT_ERRORS, RetryPolicy

T = TypeVar("T")

__all__ = ["Client"]


class Client:
    """The wsbridge server API, blocking. Safe to share between threads.

    ``url`` is the broadcast API's base URL (the stack output ``BroadcastUrl``, or
    ``http://127.0.0.1:3000`` for the local gateway); routes are appended to it.
    ``auth=SigV4()`` signs with botocore's credential chain, ``api_key="…"`` sends
    ``x-api-key``; neither sends no credentials (the local gateway's default).
    ``timeout`` applies per attempt (seconds or an ``httpx.Timeout``; default 5 s to connect,
    35 s for each read or write), ``retry`` bounds the attempts. ``http_client`` is an
    ``httpx.Client`` of your own (proxies, TLS settings, transports); it is then yours to
    close.
    """

    def __init__(
        self,
        url: str,
        *,
        auth: Auth | None = None,
        api_key: str | None = None,
        timeout: float | httpx.Timeout | None = None,
        retry: RetryPolicy | None = None,
        http_client: httpx.Client | None = None,
    ) -> None:
        self._settings = Settings.of(url, auth, api_key, timeout, retry)
        self._owns_http = http_client is None
        self._http = http_client if http_client is not None else httpx.Client()
        self._rng = random.Random()

    def _run(self, call: Call[T]) -> T:
        steps = self._settings.steps(call, self._rng)
        reply: httpx.Response | None = None
        failure: BaseException | None = None
        while True:
            step = advance(steps, reply, failure)
            reply, failure = None, None
            if isinstance(step, Done):
                return cast(T, step.value)
            if isinstance(step, Sleep):
                time.sleep(step.seconds)
                continue
            request = self._settings.build(self._http, step)
            if self._settings.auth is not None:
                self._settings.auth.apply(request)
            try:
                reply = self._http.send(request)
            except RETRYABLE_TRANSPORT_ERRORS as e:
                failure = e

    def broadcast(
        self,
        *,
        topic: str | None = None,
        topics: Sequence[str] | None = None,
        user_id: str | None = None,
        connection_ids: Sequence[str] | None = None,
        all: bool = False,
        event: str | None = None,
        data: Any = None,
        message: Any = None,
        exclude_user: str | None = None,
        exclude_connection: str | None = None,
        id: str | None = None,
        background: bool = False,
    ) -> BroadcastReport:
        """``POST /broadcast``: one message to exactly one target (``topic``, ``topics``,
        ``user_id``, ``connection_ids`` or ``all=True``), as ``event`` + ``data`` or a raw
        ``message``, leaving out ``exclude_user``/``exclude_connection``. ``id`` defaults
        to a new UUID, kept across retries so the message is sent once.

        The report's ``status`` is ``"done"`` (200), or ``"running"`` (202) when the bridge
        handed what it could not send within its synchronous budget to background parts;
        ``background=True`` (the API's ``"async": true``) hands it all over at once. Either
        way a running broadcast is followed with ``broadcast_status(report.id)`` or
        ``wait_for_broadcast(report.id)``."""
        return self._run(
            calls.broadcast(
                Broadcast(
                    topic=topic,
                    topics=topics,
                    user_id=user_id,
                    connection_ids=connection_ids,
                    all=all,
                    event=event,
                    data=data,
                    message=message,
                    exclude_user=exclude_user,
                    exclude_connection=exclude_connection,
                    id=id,
                    background=background,
                )
            )
        )

    def broadcast_batch(self, messages: Sequence[Broadcast]) -> BatchReport:
        """``POST /broadcast`` with ``{"batch": [...]}``: 1 to 25 messages sent in order, one
        report each in the same order, each with its own ``status`` (a member with
        ``background=True``, or one that outran the synchronous budget, is ``"running"``). One
        invalid member refuses them all (400)."""
        return self._run(calls.batch(messages))

    def broadcast_status(self, id: str) -> BroadcastStatus:
        """``GET /broadcasts/{id}``: how far a broadcast answered ``"running"`` has got — its
        totals so far and each background part's (``shards``). Raises ``NotFoundError`` for
        an id the bridge does not follow (unknown, older than 24 hours, or a broadcast that
        was done at once: only those answered 202 are followed)."""
        return self._run(calls.broadcast_status(id))

    def wait_for_broadcast(
        self, id: str, *, timeout: float = 300.0, poll_interval: float = 1.0
    ) -> BroadcastStatus:
        """Reads ``broadcast_status(id)`` every ``poll_interval`` seconds until it is
        ``"done"``, and returns that final status. Raises ``BroadcastTimeoutError`` (a
        ``TimeoutError``, carrying ``last_status``) when it is still running after
        ``timeout`` seconds — the broadcast itself goes on — and ``NotFoundError`` as
        ``broadcast_status`` does."""
        waiting = Waiting(id, timeout, poll_interval)
        while True:
            status = self.broadcast_status(id)
            if not status.running:
                return status
            time.sleep(waiting.pause(status))

    def subscribe(
        self,
        *,
        topic: str | None = None,
        topics: Sequence[str] | None = None,
        connection_ids: Sequence[str] | None = None,
        user_id: str | None = None,
    ) -> SubscriptionReport:
        """``POST /subscribe``: put the named connections, or every live connection of
        ``user_id``, in ``topic``/``topics`` (server-only namespaces included)."""
        return self._run(calls.subscription("subscribe", topic, topics, connection_ids, user_id))

    def unsubscribe(
        self,
        *,
        topic: str | None = None,
        topics: Sequence[str] | None = None,
        connection_ids: Sequence[str] | None = None,
        user_id: str | None = None,
    ) -> SubscriptionReport:
        """``POST /unsubscribe``: take the connections out of the topics."""
        return self._run(calls.subscription("unsubscribe", topic, topics, connection_ids, user_id))

    def disconnect(
        self,
        *,
        connection_ids: Sequence[str] | None = None,
        user_id: str | None = None,
    ) -> DisconnectReport:
        """``POST /disconnect``: close the connections (close code 1000) and remove them."""
        return self._run(calls.disconnect(connection_ids, user_id))

    def presence(self, topic: str) -> PresenceReport:
        """``GET /presence?topic=…``: who is subscribed to a topic of a ``presence``
        namespace."""
        return self._run(calls.presence(topic))

    def online(self, user_id: str) -> OnlineReport:
        """``GET /online?user_id=…``: whether the user is connected, and on which
        connections."""
        return self._run(calls.online(user_id))

    def history(
        self,
        topic: str,
        *,
        limit: int | None = None,
        since_offset: int | None = None,
        since_epoch: str | None = None,
    ) -> HistoryPage:
        """``GET /history``: a topic's last ``limit`` messages (1–100, default 100), or those
        after ``since_offset`` in ``since_epoch``."""
        return self._run(calls.history(topic, limit, since_offset, since_epoch))

    def connection_count(self) -> int:
        """``GET /connections/count``: live connections, all users."""
        return self._run(calls.connection_count())

    def close(self) -> None:
        """Closes the HTTP connections (unless the ``http_client`` was yours)."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
