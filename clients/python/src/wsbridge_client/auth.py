"""How a request proves who sends it: SigV4 for a stack deployed with ``BroadcastAuth=IAM``
(the default), or the API key of ``BroadcastAuth=API_KEY``.

Signing is botocore's own ``SigV4Auth`` over botocore's credential chain: nothing here
re-implements the algorithm or the chain.
"""

from __future__ import annotations

import os
import re
import threading
from typing import Protocol

import httpx
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import BotoCoreError
from botocore.session import get_session

from .errors import CredentialsError

__all__ = ["Auth", "ApiKey", "SigV4", "API_KEY_HEADER"]

#: The header the bridge reads the API key from.
API_KEY_HEADER = "x-api-key"

# https://<api-id>.execute-api.<region>.amazonaws.com[.cn]: the region the API lives in.
_EXECUTE_API_HOST = re.compile(r"\.execute-api\.([a-z0-9-]+)\.amazonaws\.com(\.cn)?$")

# The headers SigV4 adds; copied from botocore's request onto the one httpx sends.
_SIGNATURE_HEADERS = ("Authorization", "X-Amz-Date", "X-Amz-Security-Token")


class Auth(Protocol):
    """Something that authenticates a request just before it is sent (once per attempt)."""

    #: Whether ``apply`` may wait on the network (fetching role credentials): the asyncio
    #: client then runs it in a worker thread.
    blocking: bool

    def apply(self, request: httpx.Request) -> None: ...


class ApiKey:
    """``x-api-key: <key>`` on every request (a stack deployed with ``BroadcastAuth=API_KEY``,
    or a local gateway with ``BROADCAST_API_KEY``)."""

    blocking = False

    def __init__(self, key: str) -> None:
        if not key:
            raise ValueError("the API key must not be empty")
        self._key = key

    def apply(self, request: httpx.Request) -> None:
        request.headers[API_KEY_HEADER] = self._key

    # The key must not reach a log line through repr().
    def __repr__(self) -> str:
        return "ApiKey(***)"


class SigV4:
    """Signs each attempt with AWS Signature Version 4 for ``execute-api``.

    ``credentials``: a botocore ``Credentials`` object; by default botocore's standard chain
    resolves them on first use (environment variables, the shared credentials and config
    files with ``AWS_PROFILE``, SSO, web identity, the ECS container and the EC2 instance
    role) and refreshes temporary ones before they expire.

    ``region``: by default the one in an ``…execute-api.<region>.amazonaws.com`` URL, else
    ``AWS_REGION``, else botocore's (``AWS_DEFAULT_REGION``, the profile's ``region``).
    """

    blocking = True

    def __init__(
        self,
        region: str | None = None,
        credentials: Credentials | None = None,
    ) -> None:
        self._region = region
        self._credentials = credentials
        # Read once: "" when neither the environment nor botocore's configuration has one.
        self._configured_region: str | None = None
        # One resolution of the chain however many threads share the client.
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SigV4(region={self._region!r})"

    def _resolve(self) -> Credentials:
        with self._lock:
            if self._credentials is None:
                try:
                    self._credentials = get_session().get_credentials()
                except BotoCoreError as e:
                    raise CredentialsError(f"AWS credentials could not be resolved: {e}") from e
                if self._credentials is None:
                    raise CredentialsError(
                        "no AWS credentials found: set AWS_ACCESS_KEY_ID and "
                        "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or run with a role "
                        "(or pass SigV4(credentials=...))"
                    )
            return self._credentials

    def region_for(self, host: str) -> str:
        """The region a request to ``host`` is signed for."""
        if self._region:
            return self._region
        in_host = _EXECUTE_API_HOST.search(host)
        if in_host:
            return in_host.group(1)
        with self._lock:
            if self._configured_region is None:
                configured = os.environ.get("AWS_REGION") or get_session().get_config_variable(
                    "region"
                )
                self._configured_region = configured or ""
            region = self._configured_region
        if not region:
            raise CredentialsError(
                f"no region to sign requests to {host} for: pass SigV4(region=...) "
                "or set AWS_REGION"
            )
        return region

    def apply(self, request: httpx.Request) -> None:
        credentials = self._resolve()
        try:
            # Frozen per request: a role's credentials may be refreshed between two reads of
            # key, secret and token, and a signature mixing two sets is refused.
            frozen = credentials.get_frozen_credentials()
        except BotoCoreError as e:
            raise CredentialsError(f"AWS credentials could not be refreshed: {e}") from e
        # Exactly the host httpx sends (botocore would derive the same from the URL, but a
        # difference would be a signature mismatch far from its cause), and the body's type.
        signed = {"host": request.headers["host"]}
        if "content-type" in request.headers:
            signed["content-type"] = request.headers["content-type"]
        signable = AWSRequest(
            method=request.method, url=str(request.url), data=request.content, headers=signed
        )
        SigV4Auth(frozen, "execute-api", self.region_for(request.url.host)).add_auth(signable)
        for name in _SIGNATURE_HEADERS:
            if name in signable.headers:
                request.headers[name] = signable.headers[name]
