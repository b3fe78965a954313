"""One call, from its first attempt to its answer, without doing any I/O.

``exchange`` is a generator that yields what to do next — send this request, or sleep this
long — and is sent back the response (or thrown the transport error). The blocking and the
asyncio client each drive it in a few lines, so the retry rules, the error mapping and the
parsing exist once.
"""

from __future__ import annotations

import random
from collections.abc import Generator
from dataclasses import dataclass
from typing import TypeVar, Union

import httpx

from ._calls import Call
from ._shape import ShapeError
from .errors import ApiError, TransportError, UnexpectedResponseError, error_class
from .retry import RETRYABLE_TRANSPORT_ERRORS, RetryPolicy, parse_retry_after

T = TypeVar("T")


@dataclass(frozen=True)
class Send:
    """Send this request (built, authenticated and sent by the driver) and send back the
    response, or throw in the transport error."""

    method: str
    url: str
    content: bytes | None
    headers: dict[str, str]


@dataclass(frozen=True)
class Sleep:
    seconds: float


Step = Union[Send, Sleep]


def exchange(
    call: Call[T], base_url: str, policy: RetryPolicy, rng: random.Random
) -> Generator[Step, httpx.Response | None, T]:
    """The attempts of one call: its parsed answer, or the error of its last attempt."""
    content = call.content()
    send = Send(
        method=call.method,
        url=call.url(base_url),
        content=content,
        headers={"content-type": "application/json"} if content is not None else {},
    )
    attempt = 1
    while True:
        try:
            response = yield send
        except RETRYABLE_TRANSPORT_ERRORS as failure:
            delay = policy.delay(attempt, None, None, rng)
            if delay is None:
                raise TransportError(
                    f"{call.method} {call.path}: no answer after {attempt} attempt(s): "
                    f"{type(failure).__name__}: {failure}",
                    attempts=attempt,
                    broadcast_ids=call.broadcast_ids,
                ) from failure
        else:
            if response is None:
                raise RuntimeError("the driver sent no response")
            if response.is_success:
                return parse(call, response, attempt)
            error = api_error(response, attempt, call)
            delay = policy.delay(attempt, error.status, error.retry_after, rng)
            if delay is None:
                raise error
        yield Sleep(delay)
        attempt += 1


def parse(call: Call[T], response: httpx.Response, attempts: int) -> T:
    try:
        return call.parse(response.json())
    except (ValueError, ShapeError) as e:
        raise UnexpectedResponseError(
            f"{call.method} {call.path}: unexpected {response.status_code} answer: {e}",
            status=response.status_code,
            body=response.text,
            attempts=attempts,
            broadcast_ids=call.broadcast_ids,
        ) from e


def api_error(response: httpx.Response, attempts: int, call: Call[T]) -> ApiError:
    """The exception for a non-2xx answer: the bridge's ``{"error", "details"}``, or API
    Gateway's ``{"message"}``, or whatever text a proxy sent."""
    text = response.text
    code: str | None = None
    details = text.strip()
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        if isinstance(body.get("error"), str):
            code = body["error"]
        for key in ("details", "message"):
            if isinstance(body.get(key), str):
                details = body[key]
                break
    status = response.status_code
    return error_class(status, code)(
        status=status,
        code=code,
        details=details,
        body=text,
        retry_after=parse_retry_after(response.headers.get("retry-after")),
        attempts=attempts,
        broadcast_ids=call.broadcast_ids,
    )
