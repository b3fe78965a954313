"""Broadcasts that go on in the background, against the real gateway with real subscribers:
`background=True` and a synchronous broadcast that outruns its budget both answer
`running` (202), are followed with `broadcast_status` to `done`, reach every subscriber
exactly once, and add up part by part; a retry of a running broadcast answers its first
report; a batch mixes statuses; an unknown id is not found."""

from __future__ import annotations

from typing import Any, Callable

import pytest

from wsbridge_client import (
    Broadcast,
    BroadcastReport,
    BroadcastStatus,
    BroadcastTimeoutError,
    NotFoundError,
    RetryPolicy,
    ShardStatus,
)

from conftest import API_KEY, BACKGROUND_SHARDS, CROWD_SIZE
from support import Crowd, FlakyProxy, Subscriber, unique

Connect = Callable[[str], Subscriber]

#: Long enough for the background gateway's slowest broadcast on a loaded machine; a bound
#: so that a broadcast that never finishes fails the test, not a measure of speed.
FINISH_WITHIN = 180.0

COUNTS = ("recipients", "delivered", "gone", "failed", "retries")


def follow(api: Any, report: BroadcastReport) -> list[BroadcastStatus]:
    """Every status read from the 202 on, the last one `done` (wait_for_broadcast's own)."""
    seen = [api.broadcast_status(report.id)]
    if seen[0].running:
        seen.append(api.wait_for_broadcast(report.id, timeout=FINISH_WITHIN, poll_interval=0.2))
    return seen


def assert_parts_add_up(final: BroadcastStatus, before_handover: BroadcastReport) -> None:
    """The totals are what the accepting call sent plus every part's, and each part is done."""
    assert len(final.shards) == BACKGROUND_SHARDS
    assert [s.part for s in final.shards] == list(range(BACKGROUND_SHARDS))
    assert all(isinstance(s, ShardStatus) and s.status == "done" for s in final.shards)
    for count in COUNTS:
        parts = sum(getattr(s, count) for s in final.shards)
        assert getattr(final, count) == getattr(before_handover, count) + parts, count
    for shard in final.shards:
        assert shard.recipients == shard.delivered + shard.gone + shard.failed
    # Each run after a part's first is a continuation (or a restart: none here).
    assert final.restarts == 0
    assert final.continuations == sum(s.runs - 1 - s.restarts for s in final.shards)


def assert_everyone_reached_once(final: BroadcastStatus, crowd: Crowd) -> None:
    assert (final.recipients, final.delivered, final.gone, final.failed) == (
        CROWD_SIZE,
        CROWD_SIZE,
        0,
        0,
    )
    assert crowd.received_once(final.id) == [1] * CROWD_SIZE


def test_a_background_broadcast_reaches_every_subscriber_once_and_is_followed_to_done(
    background_api: Any, crowd: Crowd
) -> None:
    # GIVEN a few hundred subscribers of a topic, on a gateway that sends one post at a time
    # WHEN the backend broadcasts to them in the background
    report = background_api.broadcast(
        topic=crowd.topic, event="price.changed", data={"sku": 7}, background=True
    )
    # THEN the answer is at once: running, nothing sent yet, where to follow it
    assert report.status == "running" and report.running
    assert report.status_url == f"/broadcasts/{report.id}"
    assert report.shards == BACKGROUND_SHARDS
    assert (report.recipients, report.delivered, report.failed) == (0, 0, 0)
    assert not report.deadline_reached and not report.store_failed
    # AND waiting no time at all gives up on it with the status it read, still running
    with pytest.raises(BroadcastTimeoutError) as still_running:
        background_api.wait_for_broadcast(report.id, timeout=0)
    assert isinstance(still_running.value, TimeoutError)
    assert still_running.value.broadcast_ids == (report.id,)
    assert still_running.value.last_status.running
    # WHEN it is followed until it is done
    statuses = follow(background_api, report)
    # THEN its status went from running to done, and wait_for_broadcast returned the final one
    assert [s.status for s in statuses] == ["running", "done"]
    final = statuses[-1]
    assert final.id == report.id and not final.running
    assert final.created_at <= final.updated_at
    # AND the parts add up to every subscriber, and at least one part continued itself
    assert_parts_add_up(final, report)
    assert final.continuations >= 1
    # AND every subscriber received it exactly once
    assert_everyone_reached_once(final, crowd)
    # AND reading it again still answers the same final status
    assert background_api.broadcast_status(report.id).delivered == CROWD_SIZE


def test_a_broadcast_that_outruns_its_budget_answers_running_and_reaches_everyone_once(
    background_api: Any, crowd: Crowd
) -> None:
    # GIVEN the same subscribers, more than the gateway's 1 s of sending reaches
    # WHEN the backend broadcasts to them without asking for the background
    report = background_api.broadcast(topic=crowd.topic, event="sync.overrun", data={"n": 1})
    # THEN it sent what it could, and answered running with the rest in the background
    assert report.running and report.shards == BACKGROUND_SHARDS
    assert 0 < report.recipients < CROWD_SIZE
    assert report.delivered == report.recipients
    assert report.status_url == f"/broadcasts/{report.id}"
    # AND it ends done, the call's own sends and the parts' adding up to every subscriber
    final = background_api.wait_for_broadcast(report.id, timeout=FINISH_WITHIN, poll_interval=0.2)
    assert final.status == "done"
    assert_parts_add_up(final, report)
    assert_everyone_reached_once(final, crowd)


def test_an_unknown_broadcast_id_is_not_found(api: Any) -> None:
    # WHEN the status of an id nobody sent is read (an id with `/`, sent as one segment)
    unknown = unique("never/sent:")
    with pytest.raises(NotFoundError) as missing:
        api.broadcast_status(unknown)
    # THEN it is the bridge's 404, naming the id
    assert missing.value.status == 404 and missing.value.code == "not_found"
    assert unknown in missing.value.details
    # AND waiting for it is refused the same way, at once
    with pytest.raises(NotFoundError):
        api.wait_for_broadcast(unknown, timeout=60)
    # AND a broadcast that was done at once is not followed either
    done = api.broadcast(topic=unique("list:"), event="at-once")
    assert done.status == "done" and done.status_url is None and done.shards is None
    with pytest.raises(NotFoundError):
        api.broadcast_status(done.id)


def test_a_background_broadcast_with_an_id_of_many_characters_is_followed(
    api: Any, connect: Connect
) -> None:
    # GIVEN a subscriber, and a backend id using every character ids allow beyond letters,
    # ending in `/` (which a path not escaping it would lose)
    topic = unique("list:")
    subscriber = connect(unique("ada"))
    subscriber.subscribe(topic)
    message_id = unique("order/42:paid+v=2@eu|") + "_x-y.z/"
    # WHEN it is broadcast in the background and waited for
    report = api.broadcast(topic=topic, event="paid", id=message_id, background=True)
    final = api.wait_for_broadcast(message_id, timeout=FINISH_WITHIN, poll_interval=0.1)
    # THEN the status is the broadcast's, and the subscriber got it
    assert report.running and report.id == message_id
    assert final.id == message_id and final.status == "done"
    assert (final.recipients, final.delivered) == (1, 1)
    assert subscriber.next_message()["id"] == message_id


def test_a_retried_background_broadcast_answers_its_first_report_and_is_sent_once(
    proxy: FlakyProxy, make_client: Callable[..., Any], api: Any, connect: Connect
) -> None:
    # GIVEN a subscriber, and a client whose first answer is lost after the bridge accepted it
    topic = unique("list:")
    subscriber = connect(unique("retry-bg"))
    subscriber.subscribe(topic)
    flaky = make_client(
        proxy.url, api_key=API_KEY, retry=RetryPolicy(base_delay=0.01, max_delay=0.05)
    )
    proxy.script = ["forward-then-503"]
    # WHEN the backend broadcasts in the background
    report = flaky.broadcast(topic=topic, event="bg-retried", background=True)
    # THEN the retry carried the same id and was answered the first report: running, replayed
    assert proxy.broadcast_ids() == [report.id, report.id]
    assert report.replayed and report.running
    assert report.status_url == f"/broadcasts/{report.id}"
    # AND it ends done having reached the subscriber once
    final = flaky.wait_for_broadcast(report.id, timeout=FINISH_WITHIN, poll_interval=0.1)
    assert (final.recipients, final.delivered) == (1, 1)
    assert subscriber.next_message()["id"] == report.id
    api.broadcast(topic=topic, event="marker")
    assert subscriber.next_message()["event"] == "marker"


def test_a_batch_mixes_done_and_running_members(api: Any, connect: Connect) -> None:
    # GIVEN a subscriber of two topics
    first, second = unique("list:"), unique("list:")
    subscriber = connect(unique("mixed"))
    subscriber.subscribe(first, second)
    # WHEN a batch sends one member at once and one in the background
    batch = api.broadcast_batch(
        [
            Broadcast(topic=first, event="now"),
            Broadcast(topic=second, event="later", background=True),
        ]
    )
    # THEN each result has its own status, and the batch is running while one member is
    now, later = batch.results
    assert (now.status, later.status) == ("done", "running")
    assert batch.running
    assert (now.recipients, now.delivered) == (1, 1)
    assert later.status_url == f"/broadcasts/{later.id}" and now.status_url is None
    # AND the running one is followed to done, and both arrived once
    final = api.wait_for_broadcast(later.id, timeout=FINISH_WITHIN, poll_interval=0.1)
    assert (final.recipients, final.delivered) == (1, 1)
    received = sorted(m["event"] for m in (subscriber.next_message(), subscriber.next_message()))
    assert received == ["later", "now"]
    api.broadcast(topic=first, event="marker")
    assert subscriber.next_message()["event"] == "marker"
