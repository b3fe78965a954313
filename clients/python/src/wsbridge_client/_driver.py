"""What the blocking and the asyncio client share around ``exchange``: their settings, and
stepping the generator."""

from __future__ import annotations

import random
from collections.abc import Generator
from dataclasses import dataclass
from typing import TypeVar

import httpx

from ._calls import Call
from ._exchange import Send, Sleep, Step, exchange
from ._version import __version__
from .auth import ApiKey, Auth
from .retry import DEFAULT_TIMEOUT, RetryPolicy

T = TypeVar("T")

USER_AGENT = f"wsbridge-client/{__version__}"


@dataclass(frozen=True)
class Settings:
    base_url: str
    auth: Auth | None
    timeout: httpx.Timeout
    retry: RetryPolicy

    @classmethod
    def of(
        cls,
        url: str,
        auth: Auth | None,
        api_key: str | None,
        timeout: float | httpx.Timeout | None,
        retry: RetryPolicy | None,
    ) -> Settings:
        if not url.startswith(("http://", "https://")):
            raise ValueError(
                f"the broadcast API's URL must start with http:// or https://: {url!r}"
            )
        if auth is not None and api_key is not None:
            raise ValueError("pass auth=... or api_key=..., not both")
        return cls(
            # `…/prod` and `…/prod/` name the same stage: routes are appended to it.
            base_url=url.rstrip("/"),
            auth=ApiKey(api_key) if api_key is not None else auth,
            timeout=(
                DEFAULT_TIMEOUT
                if timeout is None
                else timeout
                if isinstance(timeout, httpx.Timeout)
                else httpx.Timeout(timeout)
            ),
            retry=retry or RetryPolicy(),
        )

    def steps(self, call: Call[T], rng: random.Random) -> Generator[Step, httpx.Response | None, T]:
        return exchange(call, self.base_url, self.retry, rng)

    def build(self, http: httpx.Client | httpx.AsyncClient, send: Send) -> httpx.Request:
        """The request of one attempt, before authentication (signed afresh each attempt:
        a SigV4 signature is valid for 5 minutes)."""
        return http.build_request(
            send.method,
            send.url,
            content=send.content,
            headers={"user-agent": USER_AGENT, **send.headers},
            timeout=self.timeout,
        )


@dataclass(frozen=True)
class Done:
    value: object


def advance(
    steps: Generator[Step, httpx.Response | None, T],
    reply: httpx.Response | None,
    failure: BaseException | None,
) -> Send | Sleep | Done:
    """The next step, given the last one's response or transport error."""
    try:
        if failure is not None:
            return steps.throw(failure)
        return steps.send(reply)
    except StopIteration as done:
        return Done(done.value)
