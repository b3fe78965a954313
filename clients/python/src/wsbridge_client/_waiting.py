"""The clock of ``wait_for_broadcast``, shared by both clients: how long to pause between
two reads of a running broadcast's status, and when to give up."""

from __future__ import annotations

import math
import time

from .errors import BroadcastTimeoutError
from .models import BroadcastStatus


class Waiting:
    """Polls at most every ``poll_interval`` seconds until ``timeout`` seconds have passed
    since it was made; the last read is made at the deadline, not a pause before it."""

    def __init__(self, broadcast_id: str, timeout: float, poll_interval: float) -> None:
        if not timeout >= 0 or math.isinf(timeout):
            raise ValueError(f"timeout must be a finite number of seconds, not {timeout!r}")
        if not poll_interval > 0 or math.isinf(poll_interval):
            raise ValueError(
                f"poll_interval must be a positive number of seconds, not {poll_interval!r}"
            )
        self.broadcast_id = broadcast_id
        self.timeout = timeout
        self.poll_interval = poll_interval
        self._deadline = time.monotonic() + timeout

    def pause(self, status: BroadcastStatus) -> float:
        """Seconds to wait before reading the status again, after ``status`` said it is
        still running; raises ``BroadcastTimeoutError`` once the deadline has passed."""
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise BroadcastTimeoutError(self.broadcast_id, self.timeout, status)
        return min(self.poll_interval, remaining)
