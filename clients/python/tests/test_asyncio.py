"""The asyncio client inside a running event loop, as an async backend uses it: concurrent
broadcasts on one client, and concurrent waits for background broadcasts, received by an
asyncio WebSocket subscriber."""

from __future__ import annotations

import asyncio
import json

import pytest
from websockets.asyncio.client import connect

from wsbridge_client import AsyncClient, Broadcast

from conftest import API_KEY
from support import RECEIVE_TIMEOUT, Gateway, unique


@pytest.mark.asyncio
async def test_concurrent_broadcasts_on_one_client_each_arrive_once(gateway: Gateway) -> None:
    topic = unique("list:")
    token = gateway.token(unique("async"))
    async with connect(f"{gateway.ws_url}/?token={token}") as socket:
        await socket.send(json.dumps({"action": "subscribe", "topic": topic}))
        reply = json.loads(await asyncio.wait_for(socket.recv(), RECEIVE_TIMEOUT))
        assert reply["action"] == "subscribed"
        async with AsyncClient(gateway.http_url, api_key=API_KEY) as bridge:
            # WHEN eight broadcasts and a batch run at once on one client
            reports = await asyncio.gather(
                *(bridge.broadcast(topic=topic, event="tick", data={"n": n}) for n in range(8)),
                bridge.broadcast_batch([Broadcast(topic=topic, event="batched")]),
            )
        # THEN each message arrives once, under the id its report names
        sent = {r.id for r in reports[:8]} | {reports[8].results[0].id}
        received = [
            json.loads(await asyncio.wait_for(socket.recv(), RECEIVE_TIMEOUT)) for _ in sent
        ]
        assert sorted(m["id"] for m in received) == sorted(sent)
        assert sorted(m["data"]["n"] for m in received if m["event"] == "tick") == list(range(8))


@pytest.mark.asyncio
async def test_concurrent_waits_for_background_broadcasts_each_return_done(
    gateway: Gateway,
) -> None:
    topic = unique("list:")
    token = gateway.token(unique("async-bg"))
    async with connect(f"{gateway.ws_url}/?token={token}") as socket:
        await socket.send(json.dumps({"action": "subscribe", "topic": topic}))
        reply = json.loads(await asyncio.wait_for(socket.recv(), RECEIVE_TIMEOUT))
        assert reply["action"] == "subscribed"
        async with AsyncClient(gateway.http_url, api_key=API_KEY) as bridge:
            # WHEN four broadcasts go to the background and are waited for at once
            reports = await asyncio.gather(
                *(
                    bridge.broadcast(topic=topic, event="bg", data={"n": n}, background=True)
                    for n in range(4)
                )
            )
            finals = await asyncio.gather(
                *(bridge.wait_for_broadcast(r.id, timeout=60, poll_interval=0.1) for r in reports)
            )
        # THEN each wait returns its own broadcast, done, and each message arrived once
        assert all(r.running for r in reports)
        assert [f.id for f in finals] == [r.id for r in reports]
        assert all(f.status == "done" and f.delivered == 1 for f in finals)
        received = [
            json.loads(await asyncio.wait_for(socket.recv(), RECEIVE_TIMEOUT)) for _ in reports
        ]
        assert sorted(m["id"] for m in received) == sorted(r.id for r in reports)
