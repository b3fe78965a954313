"""`POST /broadcast` through the client, against the real gateway, with real subscribers:
what arrives where, what the report says, and what the errors carry."""

from __future__ import annotations

import uuid
from typing import Any, Callable

import pytest

from wsbridge_client import (
    BadRequestError,
    BatchReport,
    Broadcast,
    BroadcastReport,
    PayloadTooLargeError,
    UnauthorizedError,
)

from support import Subscriber, unique

Connect = Callable[[str], Subscriber]


def test_a_topic_broadcast_reaches_its_subscribers_as_the_envelope(
    api: Any, connect: Connect
) -> None:
    # GIVEN two users subscribed to a topic, and a third who is not
    topic = unique("list:")
    alice, bob, carol = connect(unique("alice")), connect(unique("bob")), connect(unique("carol"))
    alice.subscribe(topic)
    bob.subscribe(topic)
    carol.subscribe(unique("list:"))
    # WHEN the backend broadcasts an event to the topic without giving an id
    report = api.broadcast(topic=topic, event="item.updated", data={"id": 7, "name": "ünï"})
    # THEN both subscribers get the envelope, whose id is the report's generated UUID
    assert isinstance(report, BroadcastReport)
    assert uuid.UUID(report.id).version == 4
    for subscriber in (alice, bob):
        envelope = subscriber.next_message()
        assert envelope["topic"] == topic
        assert envelope["event"] == "item.updated"
        assert envelope["data"] == {"id": 7, "name": "ünï"}
        assert envelope["id"] == report.id
    assert (report.recipients, report.delivered, report.gone, report.failed) == (2, 2, 0, 0)
    assert not report.replayed and not report.deadline_reached and not report.store_failed
    assert report.offset is None, "list: keeps no history"
    # AND the third user got nothing: the next thing it receives is a later message to it
    api.broadcast(connection_ids=[carol.connection_id], event="marker")
    assert carol.next_message()["event"] == "marker"


def test_the_acting_connection_is_left_out_and_the_users_other_devices_are_not(
    api: Any, connect: Connect
) -> None:
    # GIVEN alice on two devices and bob, all in one list; the acting device told its
    # backend its connection id (whoami)
    topic = unique("list:")
    alice_user, bob_user = unique("alice"), unique("bob")
    acting, other_device, bob = connect(alice_user), connect(alice_user), connect(bob_user)
    for subscriber in (acting, other_device, bob):
        subscriber.subscribe(topic)
    # WHEN the change is broadcast excluding the acting connection
    report = api.broadcast(
        topic=topic, event="card.moved", data={"card": 3}, exclude_connection=acting.connection_id
    )
    # THEN everyone else gets it, the acting connection does not
    assert report.recipients == 2 and report.delivered == 2
    assert other_device.next_message()["event"] == "card.moved"
    assert bob.next_message()["event"] == "card.moved"
    api.broadcast(topic=topic, event="marker")
    assert acting.next_message()["event"] == "marker"
    # AND excluding a user leaves out all of that user's connections
    report = api.broadcast(topic=topic, event="by-user", exclude_user=alice_user)
    assert report.recipients == 1
    assert bob.next_message()["event"] == "marker"
    assert bob.next_message()["event"] == "by-user"
    api.broadcast(topic=topic, event="marker-2")
    assert other_device.next_message()["event"] == "marker"
    assert other_device.next_message()["event"] == "marker-2"


def test_every_target_form_reaches_exactly_its_audience(api: Any, connect: Connect) -> None:
    # GIVEN dana in two lists, erin in one of them, and frank in none
    first, second = unique("list:"), unique("list:")
    dana_user = unique("dana")
    dana, erin, frank = connect(dana_user), connect(unique("erin")), connect(unique("frank"))
    dana.subscribe(first, second)
    erin.subscribe(second)
    # WHEN one message goes to both topics
    report = api.broadcast(topics=[first, second], event="both")
    # THEN each connection gets it once, with the topics named
    assert report.recipients == 2
    envelope = dana.next_message()
    assert envelope["event"] == "both" and envelope["topics"] == [first, second]
    assert erin.next_message()["event"] == "both"
    # WHEN one goes to a user, one to named connections, one to everyone, one raw
    assert api.broadcast(user_id=dana_user, event="to-user").recipients == 1
    assert (
        api.broadcast(
            connection_ids=[erin.connection_id, frank.connection_id], event="to-ids"
        ).recipients
        == 2
    )
    everyone = api.broadcast(all=True, event="to-all")
    raw = api.broadcast(connection_ids=[frank.connection_id], message=[1, "two", {"three": 3}])
    # THEN each arrives where its target says, in the order sent
    assert dana.next_message()["event"] == "to-user"
    assert erin.next_message()["event"] == "to-ids"
    assert frank.next_message()["event"] == "to-ids"
    assert everyone.recipients >= 3
    for subscriber in (dana, erin, frank):
        assert subscriber.next_message()["event"] == "to-all"
    assert frank.next_message() == [1, "two", {"three": 3}]
    assert raw.recipients == 1 and raw.delivered == 1


def test_a_repeated_id_is_answered_from_the_first_report_and_sent_once(
    api: Any, connect: Connect
) -> None:
    # GIVEN a subscriber, and a message id of the backend's own
    topic = unique("list:")
    subscriber = connect(unique("gina"))
    subscriber.subscribe(topic)
    message_id = unique("order-42-paid-")
    # WHEN the same message is broadcast twice with that id
    first = api.broadcast(topic=topic, event="paid", id=message_id)
    second = api.broadcast(topic=topic, event="paid", id=message_id)
    # THEN the second is the first's report, replayed, and the subscriber got one message
    assert first.id == second.id == message_id
    assert not first.replayed and second.replayed
    assert (second.recipients, second.delivered) == (first.recipients, first.delivered) == (1, 1)
    assert subscriber.next_message()["id"] == message_id
    api.broadcast(topic=topic, event="marker")
    assert subscriber.next_message()["event"] == "marker"


def test_a_batch_is_sent_in_order_with_one_report_per_message(api: Any, connect: Connect) -> None:
    # GIVEN a subscriber of two topics and a user addressed directly
    first, second = unique("list:"), unique("list:")
    hana_user = unique("hana")
    hana = connect(hana_user)
    hana.subscribe(first, second)
    # WHEN a batch of three goes out, one with an id of the caller's
    given_id = unique("batch-member-")
    report = api.broadcast_batch(
        [
            Broadcast(topic=first, event="one"),
            Broadcast(topic=second, event="two", id=given_id),
            Broadcast(user_id=hana_user, event="three", data={"n": 3}),
        ]
    )
    # THEN the messages arrive in the batch's order, and the reports follow it
    assert isinstance(report, BatchReport)
    received = [hana.next_message() for _ in range(3)]
    assert [m["event"] for m in received] == ["one", "two", "three"]
    assert [r.id for r in report.results] == [m["id"] for m in received]
    assert report.results[1].id == given_id
    assert all(r.delivered == 1 for r in report.results)
    # AND each member got an id of its own
    assert len({r.id for r in report.results}) == 3


def test_an_invalid_batch_member_refuses_the_batch_before_anything_is_sent(
    api: Any, connect: Connect
) -> None:
    topic = unique("list:")
    subscriber = connect(unique("ivan"))
    subscriber.subscribe(topic)
    # WHEN the second member names no target
    with pytest.raises(BadRequestError) as refused:
        api.broadcast_batch([Broadcast(topic=topic, event="first"), Broadcast(event="no-target")])
    # THEN the error carries the bridge's code, the member's index, and the ids tried
    assert refused.value.status == 400
    assert refused.value.code == "missing_target"
    assert refused.value.details.startswith("batch[1]:")
    assert refused.value.attempts == 1, "a 400 is not retried"
    assert len(refused.value.broadcast_ids) == 2
    # AND the first member was not sent either
    api.broadcast(topic=topic, event="marker")
    assert subscriber.next_message()["event"] == "marker"


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"event": "e"}, "missing_target"),
        ({"topic": "list:1", "all": True, "event": "e"}, "multiple_targets"),
        ({"topic": "not a topic", "event": "e"}, "invalid_target"),
        ({"topic": "list:1"}, "missing_message"),
        ({"topic": "list:1", "event": "e", "message": 1}, "invalid_request"),
        ({"topic": "list:1", "event": "e", "id": "spaces are not allowed"}, "invalid_request"),
    ],
)
def test_a_refused_broadcast_raises_with_the_bridges_code(api: Any, fields: Any, code: str) -> None:
    with pytest.raises(BadRequestError) as refused:
        api.broadcast(**fields)
    assert refused.value.status == 400
    assert refused.value.code == code
    assert refused.value.details


def test_a_message_over_128_kb_raises_payload_too_large(api: Any) -> None:
    with pytest.raises(PayloadTooLargeError) as refused:
        api.broadcast(all=True, event="big", data="x" * (128 * 1024))
    assert refused.value.status == 400
    assert refused.value.code == "payload_too_large"
    assert isinstance(refused.value, BadRequestError)


def test_a_wrong_api_key_raises_unauthorized(gateway: Any, make_client: Any) -> None:
    client = make_client(gateway.http_url, api_key="not-the-key")
    with pytest.raises(UnauthorizedError) as refused:
        client.broadcast(all=True, event="e")
    assert refused.value.status == 401
    assert refused.value.code == "unauthorized"
    without = make_client(gateway.http_url)
    with pytest.raises(UnauthorizedError):
        without.connection_count()
