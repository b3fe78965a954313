"""What a call can fail with: one base class, and one subclass per kind of answer a caller
handles differently (fix the request, fix the credentials, wait, or retry later)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .models import BroadcastStatus

__all__ = [
    "WsbridgeError",
    "TransportError",
    "CredentialsError",
    "UnexpectedResponseError",
    "BroadcastTimeoutError",
    "ApiError",
    "ClientError",
    "BadRequestError",
    "PayloadTooLargeError",
    "UnauthorizedError",
    "ForbiddenError",
    "NotFoundError",
    "ConflictError",
    "RateLimitedError",
    "ServerError",
]


class WsbridgeError(Exception):
    """Base class of every error this package raises.

    ``broadcast_ids`` names the message ids a failed ``broadcast`` (or batch) was sent with:
    call again with the same ids to finish it without sending twice.
    """

    def __init__(
        self,
        message: str,
        *,
        attempts: int = 1,
        broadcast_ids: Sequence[str] = (),
    ) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.broadcast_ids: tuple[str, ...] = tuple(broadcast_ids)


class TransportError(WsbridgeError):
    """No HTTP answer: the connection failed, was dropped, or timed out on every attempt.
    ``__cause__`` holds the last ``httpx`` exception."""


class CredentialsError(WsbridgeError):
    """SigV4 signing could not start: no AWS credentials in the chain, or no region."""


class UnexpectedResponseError(WsbridgeError):
    """A 2xx answer whose body is not the JSON this route answers (a proxy's page, say)."""

    def __init__(self, message: str, *, status: int, body: str, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.status = status
        self.body = body


class BroadcastTimeoutError(WsbridgeError, TimeoutError):
    """``wait_for_broadcast``'s ``timeout`` passed while the broadcast was still running.

    The broadcast goes on in the background all the same: wait again, or read
    ``broadcast_status(broadcast_id)`` later. ``last_status`` is the last status read.
    """

    def __init__(self, broadcast_id: str, timeout: float, last_status: BroadcastStatus) -> None:
        parts = ", ".join(f"part {s.part} {s.status}" for s in last_status.shards)
        super().__init__(
            f"broadcast {broadcast_id!r} still running after {timeout:g} s: "
            f"{last_status.delivered} of {last_status.recipients} delivered so far ({parts})",
            broadcast_ids=(broadcast_id,),
        )
        self.broadcast_id = broadcast_id
        self.timeout = timeout
        self.last_status = last_status


class ApiError(WsbridgeError):
    """The API answered with a status other than 2xx.

    ``status`` is the HTTP status; ``code`` is the body's ``error`` field (``missing_target``,
    ``forbidden``…) when the bridge answered, ``None`` when API Gateway did (its bodies are
    ``{"message": …}``); ``details`` is the body's ``details`` (or ``message``), ``body`` the
    raw text, and ``retry_after`` the ``Retry-After`` header in seconds, if any.
    """

    def __init__(
        self,
        *,
        status: int,
        code: str | None,
        details: str,
        body: str,
        retry_after: float | None = None,
        attempts: int = 1,
        broadcast_ids: Sequence[str] = (),
    ) -> None:
        label = f"{status} {code}" if code else str(status)
        super().__init__(
            f"{label}: {details}" if details else label,
            attempts=attempts,
            broadcast_ids=broadcast_ids,
        )
        self.status = status
        self.code = code
        self.details = details
        self.body = body
        self.retry_after = retry_after


class ClientError(ApiError):
    """A 4xx: the request, its credentials or its timing was refused."""


class BadRequestError(ClientError):
    """400: the body or query is malformed (``invalid_json``, ``invalid_request``,
    ``missing_target``, ``multiple_targets``, ``invalid_target``, ``missing_message``…)."""


class PayloadTooLargeError(BadRequestError):
    """The message as delivered would exceed 128 KB (400 ``payload_too_large``), or the
    request exceeded what the HTTP API accepts (413)."""


class UnauthorizedError(ClientError):
    """401 ``unauthorized``: the API key is missing or wrong."""


class ForbiddenError(ClientError):
    """403: a refused namespace (``forbidden``), or API Gateway refused the SigV4
    signature or the caller's IAM permissions (``code`` is ``None`` then)."""


class NotFoundError(ClientError):
    """404: no such route (check the base URL's stage), or, from ``broadcast_status`` and
    ``wait_for_broadcast``, no background broadcast with that id (only broadcasts answered
    202 are followed, for 24 hours)."""


class ConflictError(ClientError):
    """409 ``conflict``: a broadcast with this id is being sent by an earlier request right
    now. Retried with a pause; raised when it outlasts every attempt: call again later with
    the same ``broadcast_ids`` for the report."""


class RateLimitedError(ClientError):
    """429: API Gateway throttled the call (stage or account limits)."""


class ServerError(ApiError):
    """5xx: the bridge's store failed (``internal_error``) or API Gateway or Lambda did."""


_BY_STATUS = {
    400: BadRequestError,
    401: UnauthorizedError,
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    429: RateLimitedError,
}


def error_class(status: int, code: str | None) -> type[ApiError]:
    """The exception a non-2xx answer is raised as."""
    if code == "payload_too_large":
        return PayloadTooLargeError
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    if status >= 500:
        return ServerError
    if status >= 400:
        return ClientError
    return ApiError
