"""Retries through a proxy that fails on cue in front of the real gateway: 5xx, 409, 429 and
dropped connections are retried with the same message id, and a message whose first
answer was lost is delivered once all the same."""

from __future__ import annotations

import socket
from typing import Any, Callable

import httpx
import pytest

from wsbridge_client import (
    BadRequestError,
    Broadcast,
    RateLimitedError,
    RetryPolicy,
    ServerError,
    TransportError,
)

from conftest import API_KEY
from support import FlakyProxy, Subscriber, unique

Connect = Callable[[str], Subscriber]

# Short pauses: what is tested is that a retry happens and what it carries, not how long.
FAST = RetryPolicy(max_attempts=4, base_delay=0.01, max_delay=0.05, conflict_delay=0.05)


@pytest.fixture
def flaky(proxy: FlakyProxy, make_client: Callable[..., Any]) -> Any:
    """A client (blocking, then asyncio) whose requests go through the proxy."""
    return make_client(proxy.url, api_key=API_KEY, retry=FAST)


def subscribed(connect: Connect) -> tuple[Subscriber, str]:
    topic = unique("list:")
    subscriber = connect(unique("retry"))
    subscriber.subscribe(topic)
    return subscriber, topic


def assert_received_once(subscriber: Subscriber, api: Any, topic: str, message_id: str) -> None:
    """The message arrived, and nothing else came before a marker sent after it."""
    assert subscriber.next_message()["id"] == message_id
    api.broadcast(topic=topic, event="marker")
    assert subscriber.next_message()["event"] == "marker"


@pytest.mark.parametrize("failure", ["503", "drop", "409", "429:0.05"])
def test_an_attempt_that_never_reached_the_bridge_is_retried_and_sent_once(
    failure: str, flaky: Any, proxy: FlakyProxy, api: Any, connect: Connect
) -> None:
    subscriber, topic = subscribed(connect)
    # GIVEN the first attempt fails before the bridge sees it
    proxy.script = [failure]
    # WHEN the backend broadcasts
    report = flaky.broadcast(topic=topic, event="retried")
    # THEN the second attempt carried the same id, and sent the message once
    assert proxy.broadcast_ids() == [report.id, report.id]
    assert not report.replayed and report.delivered == 1
    assert_received_once(subscriber, api, topic, report.id)


@pytest.mark.parametrize("failure", ["forward-then-503", "forward-then-drop"])
def test_a_broadcast_whose_answer_was_lost_is_not_sent_again(
    failure: str, flaky: Any, proxy: FlakyProxy, api: Any, connect: Connect
) -> None:
    subscriber, topic = subscribed(connect)
    # GIVEN the bridge sends the message but its answer never reaches the client
    proxy.script = [failure]
    # WHEN the client retries
    report = flaky.broadcast(topic=topic, event="lost-answer")
    # THEN the retry is answered from the first attempt's report, and nothing is sent twice
    assert proxy.broadcast_ids() == [report.id, report.id]
    assert report.replayed
    assert (report.recipients, report.delivered) == (1, 1)
    assert_received_once(subscriber, api, topic, report.id)


def test_an_attempt_that_timed_out_and_reached_the_bridge_late_is_not_sent_again(
    make_client: Callable[..., Any], proxy: FlakyProxy, api: Any, connect: Connect
) -> None:
    subscriber, topic = subscribed(connect)
    # GIVEN a client that waits 0.5 s for an answer, and a first attempt held for 2 s
    client = make_client(proxy.url, api_key=API_KEY, retry=FAST, timeout=0.5)
    proxy.script = ["hold:2"]
    # WHEN the client gives up on it and retries, and the held attempt arrives afterwards
    report = client.broadcast(topic=topic, event="late")
    proxy.wait_idle()
    # THEN every attempt carried one id, and the message was delivered once
    ids = proxy.broadcast_ids()
    assert len(ids) >= 2 and set(ids) == {report.id}
    assert_received_once(subscriber, api, topic, report.id)


def test_a_batch_whose_answer_was_lost_sends_each_member_once(
    flaky: Any, proxy: FlakyProxy, api: Any, connect: Connect
) -> None:
    subscriber, topic = subscribed(connect)
    proxy.script = ["forward-then-503"]
    report = flaky.broadcast_batch(
        [Broadcast(topic=topic, event="first"), Broadcast(topic=topic, event="second")]
    )
    assert all(r.replayed for r in report.results)
    assert [subscriber.next_message()["event"] for _ in range(2)] == ["first", "second"]
    api.broadcast(topic=topic, event="marker")
    assert subscriber.next_message()["event"] == "marker"


def test_persistent_failure_raises_with_the_id_to_resume_with(
    flaky: Any, proxy: FlakyProxy, api: Any, connect: Connect
) -> None:
    subscriber, topic = subscribed(connect)
    # GIVEN every attempt fails, the last after the bridge sent the message
    proxy.script = ["503", "503", "503", "forward-then-503"]
    # WHEN the attempts run out
    with pytest.raises(ServerError) as failed:
        flaky.broadcast(topic=topic, event="persistent")
    # THEN the error says how many attempts were made and with which id
    assert failed.value.status == 503 and failed.value.attempts == 4
    (message_id,) = failed.value.broadcast_ids
    assert proxy.broadcast_ids() == [message_id] * 4
    # AND calling again with that id finishes it without a second delivery
    resumed = flaky.broadcast(topic=topic, event="persistent", id=message_id)
    assert resumed.replayed and resumed.id == message_id
    assert_received_once(subscriber, api, topic, message_id)


def test_a_retry_after_beyond_the_policy_is_raised_not_waited_for(
    flaky: Any, proxy: FlakyProxy
) -> None:
    proxy.script = ["429:3600"]
    with pytest.raises(RateLimitedError) as throttled:
        flaky.connection_count()
    assert throttled.value.status == 429 and throttled.value.retry_after == 3600
    assert throttled.value.attempts == 1 and len(proxy.seen) == 1


def test_reads_are_retried_too(flaky: Any, proxy: FlakyProxy, api: Any, connect: Connect) -> None:
    room = unique("room:")
    member = connect(unique("reader"))
    member.subscribe(room)
    proxy.script = ["drop", "503"]
    presence = flaky.presence(room)
    assert presence.total_connections == 1
    assert [s["behaviour"] for s in proxy.seen] == ["drop", "503", "forward"]
    assert all(s["path"].startswith("/presence?topic=") for s in proxy.seen)


def test_a_refused_request_is_not_retried(flaky: Any, proxy: FlakyProxy) -> None:
    with pytest.raises(BadRequestError):
        flaky.broadcast(event="no target")
    assert len(proxy.seen) == 1


def test_no_answer_at_all_raises_a_transport_error(make_client: Callable[..., Any]) -> None:
    # GIVEN a port nothing listens on
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = make_client(f"http://127.0.0.1:{port}", retry=FAST)
    # WHEN every attempt fails to connect
    with pytest.raises(TransportError) as failed:
        client.broadcast(all=True, event="nowhere")
    # THEN the error carries the attempts, the id, and httpx's error as its cause
    assert failed.value.attempts == FAST.max_attempts
    assert len(failed.value.broadcast_ids) == 1
    assert isinstance(failed.value.__cause__, httpx.ConnectError)
