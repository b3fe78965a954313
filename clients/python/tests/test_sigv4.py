"""SigV4 against the gateway started with `--sigv4`, which verifies signatures as API
Gateway does in IAM mode: credentials found by botocore's standard chain are accepted, a
wrong secret or region is a 403 raised as `ForbiddenError`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest
from botocore.credentials import Credentials

from wsbridge_client import CredentialsError, ForbiddenError, SigV4

from conftest import SIGV4_ACCESS_KEY, SIGV4_REGION, SIGV4_SECRET_KEY
from support import Gateway, Subscriber, unique


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """An environment with no AWS identity at all: no variables, no shared files of the
    developer's, no instance metadata. Each test adds what its chain should find."""
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return monkeypatch


@pytest.fixture
def signed_env(aws_env: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The gateway's identity in the environment variables botocore's chain reads first."""
    aws_env.setenv("AWS_ACCESS_KEY_ID", SIGV4_ACCESS_KEY)
    aws_env.setenv("AWS_SECRET_ACCESS_KEY", SIGV4_SECRET_KEY)
    aws_env.setenv("AWS_REGION", SIGV4_REGION)
    return aws_env


@pytest.fixture
def subscriber(sigv4_gateway: Gateway) -> Iterator[Subscriber]:
    connected = sigv4_gateway.connect(unique("sigv4-"))
    yield connected
    connected.close()


def test_credentials_from_the_environment_are_accepted_on_every_route(
    signed_env: pytest.MonkeyPatch,
    sigv4_gateway: Gateway,
    make_client: Callable[..., Any],
    subscriber: Subscriber,
) -> None:
    room = unique("room:")
    subscriber.subscribe(room)
    client = make_client(sigv4_gateway.http_url, auth=SigV4())
    # A signed POST with a body
    report = client.broadcast(topic=room, event="signed", data={"ok": True})
    assert report.delivered == 1
    assert subscriber.next_message()["id"] == report.id
    # Signed GETs whose query strings hold characters SigV4 escapes (`:`, `+`, `=`)
    assert client.presence(room).total_connections == 1
    page = client.history(room, since_offset=0, since_epoch=report.epoch)
    assert [m["id"] for m in page.messages] == [report.id]
    assert client.online("who+is=this").online is False
    assert client.connection_count() >= 1
    # A signed GET whose path holds an escaped id (`/`, `:` and `+` as %2F, %3A, %2B, which
    # SigV4 canonicalizes encoded once more)
    background = client.broadcast(
        topic=room, event="signed-bg", id=unique("signed/bg:1+"), background=True
    )
    assert background.running
    final = client.wait_for_broadcast(background.id, timeout=60, poll_interval=0.1)
    assert (final.status, final.delivered) == ("done", 1)
    assert subscriber.next_message()["id"] == background.id


def test_temporary_credentials_sign_their_session_token(
    signed_env: pytest.MonkeyPatch, sigv4_gateway: Gateway, make_client: Callable[..., Any]
) -> None:
    signed_env.setenv("AWS_SESSION_TOKEN", "a-session-token")
    client = make_client(sigv4_gateway.http_url, auth=SigV4())
    assert client.connection_count() >= 0


def test_a_named_profile_in_the_shared_files_is_found_with_its_region(
    aws_env: pytest.MonkeyPatch,
    tmp_path: Path,
    sigv4_gateway: Gateway,
    make_client: Callable[..., Any],
    subscriber: Subscriber,
) -> None:
    # GIVEN only a profile in the shared credentials and config files
    credentials = tmp_path / "credentials"
    credentials.write_text(
        f"[backend]\naws_access_key_id = {SIGV4_ACCESS_KEY}\n"
        f"aws_secret_access_key = {SIGV4_SECRET_KEY}\n"
    )
    config = tmp_path / "config"
    config.write_text(f"[profile backend]\nregion = {SIGV4_REGION}\n")
    aws_env.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    aws_env.setenv("AWS_CONFIG_FILE", str(config))
    aws_env.setenv("AWS_PROFILE", "backend")
    # WHEN the client signs with the default chain
    client = make_client(sigv4_gateway.http_url, auth=SigV4())
    report = client.broadcast(connection_ids=[subscriber.connection_id], event="from-profile")
    # THEN the gateway accepted it and the message arrived
    assert subscriber.next_message()["id"] == report.id


def test_explicit_credentials_and_region_take_precedence(
    aws_env: pytest.MonkeyPatch, sigv4_gateway: Gateway, make_client: Callable[..., Any]
) -> None:
    aws_env.setenv("AWS_ACCESS_KEY_ID", "AKIDSOMEONEELSE")
    aws_env.setenv("AWS_SECRET_ACCESS_KEY", "not-this-one")
    aws_env.setenv("AWS_REGION", "us-west-2")
    auth = SigV4(region=SIGV4_REGION, credentials=Credentials(SIGV4_ACCESS_KEY, SIGV4_SECRET_KEY))
    assert make_client(sigv4_gateway.http_url, auth=auth).connection_count() >= 0


def test_a_wrong_secret_is_refused_with_403_and_sends_nothing(
    signed_env: pytest.MonkeyPatch,
    sigv4_gateway: Gateway,
    make_client: Callable[..., Any],
    subscriber: Subscriber,
) -> None:
    # GIVEN the right access key with the wrong secret
    signed_env.setenv("AWS_SECRET_ACCESS_KEY", "the-wrong-secret")
    client = make_client(sigv4_gateway.http_url, auth=SigV4())
    # WHEN it broadcasts
    with pytest.raises(ForbiddenError) as refused:
        client.broadcast(connection_ids=[subscriber.connection_id], event="forged")
    # THEN API Gateway's 403 is raised as is, once (a 403 is not retried)
    assert refused.value.status == 403
    assert refused.value.code is None
    assert "signature" in refused.value.details
    assert refused.value.attempts == 1
    # AND nothing reached the connection: the next message is a properly signed one
    signed_env.setenv("AWS_SECRET_ACCESS_KEY", SIGV4_SECRET_KEY)
    right = make_client(sigv4_gateway.http_url, auth=SigV4())
    right.broadcast(connection_ids=[subscriber.connection_id], event="marker")
    assert subscriber.next_message()["event"] == "marker"


def test_a_signature_for_another_region_or_none_is_refused(
    signed_env: pytest.MonkeyPatch, sigv4_gateway: Gateway, make_client: Callable[..., Any]
) -> None:
    with pytest.raises(ForbiddenError) as wrong_region:
        make_client(sigv4_gateway.http_url, auth=SigV4(region="us-east-2")).connection_count()
    assert "region" in wrong_region.value.details
    with pytest.raises(ForbiddenError) as unsigned:
        make_client(sigv4_gateway.http_url).connection_count()
    assert unsigned.value.details == "Missing Authentication Token"


def test_no_credentials_anywhere_is_a_credentials_error(
    aws_env: pytest.MonkeyPatch, sigv4_gateway: Gateway, make_client: Callable[..., Any]
) -> None:
    client = make_client(sigv4_gateway.http_url, auth=SigV4(region=SIGV4_REGION))
    with pytest.raises(CredentialsError, match="no AWS credentials"):
        client.connection_count()


def test_no_region_anywhere_is_a_credentials_error(
    signed_env: pytest.MonkeyPatch, sigv4_gateway: Gateway, make_client: Callable[..., Any]
) -> None:
    signed_env.delenv("AWS_REGION")
    client = make_client(sigv4_gateway.http_url, auth=SigV4())
    with pytest.raises(CredentialsError, match="no region"):
        client.connection_count()
