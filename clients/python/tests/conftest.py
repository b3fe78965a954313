"""Session fixtures: the local gateway in API-key mode and in SigV4 mode, each on free
loopback ports and stopped by PID at the end; and both clients, so that every behaviour
test runs against the blocking and the asyncio client alike."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any, Callable

import pytest

from wsbridge_client import AsyncClient, Client

from support import CHANNELS, Crowd, FlakyProxy, Gateway, Subscriber, unique

API_KEY = "python-client-test-key"

#: Subscribers of the background gateway's crowd: a few hundred real connections.
CROWD_SIZE = 600
#: Parts a broadcast handed to the background is split in there.
BACKGROUND_SHARDS = 2
#: How long each of the background gateway's posts takes: a floor on a broadcast's time that
#: does not depend on how fast the machine is (API Gateway's own are 10-30 ms).
POST_LATENCY_MS = 10

#: The one identity the SigV4 gateway accepts, and the region it expects.
SIGV4_ACCESS_KEY = "AKIDWSBRIDGETEST"
SIGV4_SECRET_KEY = "wsbridge-python-client-test-secret"
SIGV4_REGION = "eu-west-3"


@pytest.fixture(scope="session")
def gateway() -> Iterator[Gateway]:
    running = Gateway(["--channels", str(CHANNELS)], {"BROADCAST_API_KEY": API_KEY})
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="session")
def sigv4_gateway() -> Iterator[Gateway]:
    running = Gateway(
        ["--channels", str(CHANNELS), "--sigv4"],
        {
            "AWS_ACCESS_KEY_ID": SIGV4_ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SIGV4_SECRET_KEY,
            "AWS_REGION": SIGV4_REGION,
        },
    )
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="session")
def background_gateway() -> Iterator[Gateway]:
    """A gateway where a broadcast to a few hundred subscribers cannot finish in its
    synchronous call: it sends one post at a time, each answered after POST_LATENCY_MS (so at
    most 1 000 / POST_LATENCY_MS a second, however fast the machine), for at most 1 s, and
    hands the rest to 2 parts, each run lasting 6 s (the least) and reading recipients for
    its first second only (5 s are kept for the continuation), so a part continues itself in
    a new run before it is done."""
    running = Gateway(
        [
            "--channels",
            str(CHANNELS),
            "--shard-run-seconds",
            "6",
            "--post-latency-ms",
            str(POST_LATENCY_MS),
        ],
        {
            "BROADCAST_API_KEY": API_KEY,
            "BROADCAST_SYNC_SECONDS": "1",
            "BROADCAST_SHARDS": str(BACKGROUND_SHARDS),
            "FANOUT_CONCURRENCY": "1",
            # The crowd is one user's connections: one token for all of them.
            "MAX_CONNECTIONS_PER_USER": str(CROWD_SIZE),
        },
    )
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="session")
def crowd(background_gateway: Gateway) -> Iterator[Crowd]:
    """CROWD_SIZE connections of the background gateway subscribed to one topic, each
    counting what it receives by envelope id."""
    gathered = Crowd(background_gateway, CROWD_SIZE, unique("list:crowd-"), unique("crowd-"))
    try:
        yield gathered
    finally:
        gathered.close()


class Blocking:
    """An AsyncClient called from synchronous tests: each call runs to completion on the
    adapter's own event loop."""

    def __init__(self, client: AsyncClient) -> None:
        self.loop = asyncio.new_event_loop()
        self.client = client

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self.client, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            return self.loop.run_until_complete(method(*args, **kwargs))

        return call

    def close(self) -> None:
        self.loop.run_until_complete(self.client.aclose())
        self.loop.close()


@pytest.fixture(params=["sync", "async"])
def make_client(request: pytest.FixtureRequest) -> Iterator[Callable[..., Any]]:
    """Builds a `Client` or an `AsyncClient` (behind `Blocking`) with the given arguments."""
    made: list[Any] = []

    def make(url: str, **kwargs: Any) -> Any:
        client: Any = (
            Client(url, **kwargs)
            if request.param == "sync"
            else Blocking(AsyncClient(url, **kwargs))
        )
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture
def api(gateway: Gateway, make_client: Callable[..., Any]) -> Any:
    """A client of the API-key gateway (blocking, then asyncio)."""
    return make_client(gateway.http_url, api_key=API_KEY)


@pytest.fixture
def background_api(background_gateway: Gateway, make_client: Callable[..., Any]) -> Any:
    """A client of the background gateway (blocking, then asyncio)."""
    return make_client(background_gateway.http_url, api_key=API_KEY)


@pytest.fixture
def connect(gateway: Gateway) -> Iterator[Callable[[str], Subscriber]]:
    """Opens WebSocket connections to the API-key gateway, closed after the test."""
    opened: list[Subscriber] = []

    def open_one(user: str) -> Subscriber:
        subscriber = gateway.connect(user)
        opened.append(subscriber)
        return subscriber

    yield open_one
    for subscriber in opened:
        subscriber.close()


@pytest.fixture
def proxy(gateway: Gateway) -> Iterator[FlakyProxy]:
    running = FlakyProxy(gateway.http_url)
    try:
        yield running
    finally:
        running.stop()
