"""When a failed attempt is tried again, and after how long.

Every route is safe to retry: subscribe, unsubscribe and disconnect are idempotent, the
reads change nothing, and every broadcast carries an ``id`` that the bridge remembers for
24 hours, so a retried broadcast is answered with the first one's report instead of being
sent again.
"""

from __future__ import annotations

import email.utils
import random
from dataclasses import dataclass
from datetime import datetime, timezone

import httpx

__all__ = ["RetryPolicy", "DEFAULT_TIMEOUT", "RETRYABLE_TRANSPORT_ERRORS"]

#: Per attempt: 5 s to connect, 35 s for everything else. A broadcast may run for up to
#: 29 s (API Gateway's integration timeout; the bridge stops its fan-out before it), so a
#: shorter read timeout would give up on broadcasts still sending.
DEFAULT_TIMEOUT = httpx.Timeout(35.0, connect=5.0)

#: No answer came: the request may or may not have been applied, which the idempotency key
#: makes harmless. (An invalid URL or an unsupported scheme is not among them.)
RETRYABLE_TRANSPORT_ERRORS = (
    httpx.TimeoutException,
    httpx.NetworkError,
    httpx.RemoteProtocolError,
)


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with full-jitter exponential backoff.

    - ``max_attempts``: attempts in all, the first included (1 turns retries off).
    - Transport failures, 429 and 5xx wait ``uniform(0, min(max_delay, base_delay * 2**n))``
      before retry ``n`` (0-based), or the answer's ``Retry-After`` if that is longer; a
      ``Retry-After`` over ``max_retry_after`` is not waited for: the error is raised.
    - 409 (a broadcast with this id is still being sent by an earlier attempt) waits at
      least ``conflict_delay``, then asks again for the first attempt's report.
    """

    max_attempts: int = 4
    base_delay: float = 0.25
    max_delay: float = 8.0
    conflict_delay: float = 2.0
    max_retry_after: float = 30.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if min(self.base_delay, self.max_delay, self.conflict_delay, self.max_retry_after) < 0:
            raise ValueError("delays must not be negative")

    @staticmethod
    def retryable(status: int | None) -> bool:
        """Whether an answer (``None``: no answer at all) is worth another attempt."""
        return status is None or status in (409, 429) or status >= 500

    def delay(
        self,
        attempt: int,
        status: int | None,
        retry_after: float | None,
        rng: random.Random,
    ) -> float | None:
        """Seconds to wait after attempt number ``attempt`` (1-based) failed with ``status``
        (``None``: no answer), or ``None`` to give up and raise."""
        if attempt >= self.max_attempts or not self.retryable(status):
            return None
        if retry_after is not None and retry_after > self.max_retry_after:
            return None
        wait = rng.uniform(0.0, min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))
        if status == 409:
            wait = max(wait, self.conflict_delay)
        if retry_after is not None:
            wait = max(wait, retry_after)
        return wait


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """``Retry-After`` in seconds: a number of seconds or an HTTP date; ``None`` when absent
    or unreadable."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - (now or datetime.now(timezone.utc))).total_seconds()
    return max(0.0, seconds) if seconds == seconds else None  # NaN is no delay
