"""Session fixtures: the local gateway in API-key mode and in SigV4 mode, each on free
loopback ports and stopped by PID at the end; and both clients, so that every behaviour
test runs against the blocking and the asyncio client alike."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any, Callable

import pytest

from wsbridge_client import AsyncClient, Client

from support import CHANNELS, FlakyProxy, Gateway, Subscriber

API_KEY = "python-client-test-key"

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
