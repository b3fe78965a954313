"""Backend client for the wsbridge broadcast API.

    from wsbridge_client import Client, SigV4

    with Client("https://abc123.execute-api.eu-west-1.amazonaws.com", auth=SigV4()) as bridge:
        report = bridge.broadcast(topic="list:123", event="item.updated", data={"id": 7})
        if report.running:  # 202: the rest is being sent in the background
            final = bridge.wait_for_broadcast(report.id, timeout=120)

``AsyncClient`` has the same methods, awaited.
"""

from ._version import __version__
from .async_client import AsyncClient
from .auth import ApiKey, Auth, SigV4
from .client import Client
from .errors import (
    ApiError,
    BadRequestError,
    BroadcastTimeoutError,
    ClientError,
    ConflictError,
    CredentialsError,
    ForbiddenError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitedError,
    ServerError,
    TransportError,
    UnauthorizedError,
    UnexpectedResponseError,
    WsbridgeError,
)
from .models import (
    BatchReport,
    Broadcast,
    BroadcastReport,
    BroadcastState,
    BroadcastStatus,
    ConnectionFailure,
    DisconnectReport,
    HistoryPage,
    OnlineConnection,
    OnlineReport,
    PresenceReport,
    PresentUser,
    ShardState,
    ShardStatus,
    SubscriptionReport,
)
from .retry import DEFAULT_TIMEOUT, RetryPolicy

__all__ = [
    "__version__",
    "Client",
    "AsyncClient",
    "Auth",
    "ApiKey",
    "SigV4",
    "RetryPolicy",
    "DEFAULT_TIMEOUT",
    "Broadcast",
    "BroadcastReport",
    "BatchReport",
    "BroadcastState",
    "BroadcastStatus",
    "ShardState",
    "ShardStatus",
    "ConnectionFailure",
    "SubscriptionReport",
    "DisconnectReport",
    "PresentUser",
    "PresenceReport",
    "OnlineConnection",
    "OnlineReport",
    "HistoryPage",
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
