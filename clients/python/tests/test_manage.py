"""The server API's other routes through the client: subscribe, unsubscribe and disconnect
change what real connections receive; presence, online, history and the count answer what
the gateway holds."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Callable

import pytest
from websockets.exceptions import ConnectionClosed

from wsbridge_client import (
    DisconnectReport,
    ForbiddenError,
    HistoryPage,
    OnlineReport,
    PresenceReport,
    PresentUser,
    SubscriptionReport,
)

from conftest import API_KEY
from support import CHANNELS, Gateway, Subscriber, unique

Connect = Callable[[str], Subscriber]


def test_server_subscribe_and_unsubscribe_change_what_arrives(api: Any, connect: Connect) -> None:
    # GIVEN alice on two devices; admin: is server-only, so no client can join it itself
    topic = unique("admin:")
    alice_user = unique("alice")
    laptop, phone = connect(alice_user), connect(alice_user)
    refused = laptop.request({"action": "subscribe", "topic": topic})
    assert refused["error"] == "forbidden"
    # WHEN the backend subscribes every connection of alice
    report = api.subscribe(topic=topic, user_id=alice_user)
    # THEN both are reported subscribed and both receive the topic
    assert isinstance(report, SubscriptionReport)
    assert report.action == "subscribed"
    assert report.topics == [topic]
    assert sorted(report.connections) == sorted([laptop.connection_id, phone.connection_id])
    assert report.not_connected == [] and report.failed == []
    api.broadcast(topic=topic, event="alert", data={"level": 1})
    assert laptop.next_message()["event"] == "alert"
    assert phone.next_message()["event"] == "alert"
    # WHEN the phone is unsubscribed by its id, alongside an id that is not connected
    gone_id = "Z" * 16
    report = api.unsubscribe(topics=[topic], connection_ids=[phone.connection_id, gone_id])
    assert report.action == "unsubscribed"
    assert report.connections == [phone.connection_id]
    assert report.not_connected == [gone_id]
    # THEN the laptop still receives the topic and the phone does not
    api.broadcast(topic=topic, event="alert-2")
    api.broadcast(connection_ids=[phone.connection_id], event="marker")
    assert laptop.next_message()["event"] == "alert-2"
    assert phone.next_message()["event"] == "marker"


def test_a_closed_namespace_is_refused_and_nothing_is_applied(api: Any, connect: Connect) -> None:
    subscriber = connect(unique("jack"))
    with pytest.raises(ForbiddenError) as refused:
        api.subscribe(
            topics=[unique("admin:"), unique("closed:")], connection_ids=[subscriber.connection_id]
        )
    assert refused.value.status == 403
    assert refused.value.code == "forbidden"
    assert "closed" in refused.value.details


def test_disconnect_closes_the_users_connections(api: Any, connect: Connect) -> None:
    # GIVEN kate on two devices and leo on one
    kate_user = unique("kate")
    first, second, leo = connect(kate_user), connect(kate_user), connect(unique("leo"))
    assert api.online(kate_user).online
    # WHEN the backend disconnects kate
    report = api.disconnect(user_id=kate_user)
    # THEN both her connections are reported and closed with 1000, leo's stays open
    assert isinstance(report, DisconnectReport)
    assert sorted(report.disconnected) == sorted([first.connection_id, second.connection_id])
    assert report.not_connected == [] and report.failed == []
    for subscriber in (first, second):
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                subscriber.next_message()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000
    online = api.online(kate_user)
    assert (online.online, online.connections) == (False, [])
    assert leo.request({"action": "ping"})["action"] == "pong"
    # AND an id no longer connected is reported as such
    again = api.disconnect(connection_ids=[first.connection_id])
    assert again.disconnected == [] and again.not_connected == [first.connection_id]


def test_presence_and_online_answer_who_is_there(api: Any, connect: Connect) -> None:
    # GIVEN alice on two devices and bob on one in a room (a presence namespace)
    room = unique("room:")
    alice_user, bob_user = "a-" + unique(""), "b-" + unique("")
    devices = [connect(alice_user), connect(alice_user), connect(bob_user)]
    for device in devices:
        device.subscribe(room)
    # WHEN the backend asks
    presence = api.presence(room)
    online = api.online(alice_user)
    # THEN each user is there once, by user id, with their connections counted
    assert isinstance(presence, PresenceReport)
    assert presence.topic == room
    assert presence.users == [PresentUser(alice_user, 2), PresentUser(bob_user, 1)]
    assert (presence.total_users, presence.total_connections, presence.complete) == (2, 3, True)
    assert isinstance(online, OnlineReport)
    assert online.user_id == alice_user and online.online
    # (two connections made within one millisecond are ordered by id: compare as sets)
    assert {c.connection_id for c in online.connections} == {d.connection_id for d in devices[:2]}
    assert online.connections[0].connected_at <= online.connections[1].connected_at
    # AND a namespace that keeps no presence is refused, not answered empty
    with pytest.raises(ForbiddenError) as refused:
        api.presence(unique("list:"))
    assert refused.value.code == "forbidden"


def test_history_reads_what_was_kept(api: Any, connect: Connect) -> None:
    # GIVEN three broadcasts to a room that keeps history
    room = unique("room:")
    reports = [api.broadcast(topic=room, event="said", data={"n": n}) for n in (1, 2, 3)]
    # THEN each got the next offset in one epoch
    assert [r.offset for r in reports] == [1, 2, 3]
    epoch = reports[0].epoch
    assert epoch and all(r.epoch == epoch for r in reports)
    # WHEN the backend reads the last two, and what followed offset 1
    last_two = api.history(room, limit=2)
    after_first = api.history(room, since_offset=1, since_epoch=epoch)
    # THEN it gets the messages as delivered, oldest first
    assert isinstance(last_two, HistoryPage)
    assert (last_two.topic, last_two.epoch, last_two.offset) == (room, epoch, 3)
    assert [m["data"]["n"] for m in last_two.messages] == [2, 3]
    assert [m["offset"] for m in last_two.messages] == [2, 3]
    assert last_two.recovered is None
    assert after_first.recovered is True and after_first.more is False
    assert [m["id"] for m in after_first.messages] == [r.id for r in reports[1:]]
    # AND a position in another epoch cannot be continued
    lost = api.history(room, since_offset=1, since_epoch="not-the-epoch")
    assert lost.recovered is False and lost.messages == []
    # AND a namespace without history is refused
    with pytest.raises(ForbiddenError):
        api.history(unique("list:"))


@pytest.fixture
def quiet_gateway() -> Iterator[Gateway]:
    """A gateway of this test's own: nobody else's connections come and go in its count."""
    running = Gateway(["--channels", str(CHANNELS)], {"BROADCAST_API_KEY": API_KEY})
    try:
        yield running
    finally:
        running.stop()


def test_connection_count_counts_live_connections(
    quiet_gateway: Gateway, make_client: Callable[..., Any]
) -> None:
    client = make_client(quiet_gateway.http_url, api_key=API_KEY)
    assert client.connection_count() == 0
    first, second = quiet_gateway.connect("mia"), quiet_gateway.connect("noah")
    try:
        assert client.connection_count() == 2
        client.disconnect(connection_ids=[first.connection_id])
        assert client.connection_count() == 1
    finally:
        first.close()
        second.close()
