"""The pure parts, without a gateway: the retry policy, the answers read into errors and
reports, the request bodies and URLs, and SigV4's headers."""

from __future__ import annotations

import random
from collections.abc import Generator
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
from botocore.credentials import Credentials

from wsbridge_client import (
    ApiError,
    ApiKey,
    BadRequestError,
    BatchReport,
    Broadcast,
    BroadcastReport,
    BroadcastStatus,
    BroadcastTimeoutError,
    Client,
    ClientError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitedError,
    RetryPolicy,
    ServerError,
    ShardStatus,
    SigV4,
    UnauthorizedError,
    UnexpectedResponseError,
)
from wsbridge_client import _calls as calls
from wsbridge_client._exchange import Send, Sleep, exchange
from wsbridge_client._waiting import Waiting
from wsbridge_client.retry import parse_retry_after

# --- the retry policy ---------------------------------------------------------------------


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 413])
def test_refusals_are_never_retried(status: int) -> None:
    assert RetryPolicy().delay(1, status, None, random.Random(1)) is None


@pytest.mark.parametrize("status", [None, 409, 429, 500, 502, 503, 504])
def test_failures_are_retried_until_the_attempts_run_out(status: int | None) -> None:
    policy = RetryPolicy(max_attempts=3)
    rng = random.Random(7)
    assert policy.delay(1, status, None, rng) is not None
    assert policy.delay(2, status, None, rng) is not None
    assert policy.delay(3, status, None, rng) is None


def test_backoff_is_full_jitter_under_a_doubling_cap() -> None:
    policy = RetryPolicy(max_attempts=10, base_delay=0.5, max_delay=3.0)
    rng = random.Random(42)
    for attempt, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 3.0), (8, 3.0)]:
        waits = [policy.delay(attempt, 503, None, rng) for _ in range(500)]
        assert all(w is not None and 0.0 <= w <= ceiling for w in waits)
        # spread over the whole range, not a fixed step
        assert min(w for w in waits if w is not None) < ceiling * 0.1
        assert max(w for w in waits if w is not None) > ceiling * 0.9


def test_a_conflict_waits_at_least_the_conflict_delay() -> None:
    policy = RetryPolicy(base_delay=0.01, conflict_delay=2.0)
    rng = random.Random(3)
    assert all((policy.delay(1, 409, None, rng) or 0) >= 2.0 for _ in range(100))


def test_retry_after_is_a_floor_and_too_long_a_one_gives_up() -> None:
    policy = RetryPolicy(base_delay=0.01, max_retry_after=30)
    rng = random.Random(5)
    assert policy.delay(1, 429, 12.5, rng) == 12.5
    assert policy.delay(1, 503, 31, rng) is None


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = datetime(2025, 6, 1, 12, 0, 0, tzinfo=timezone.utc)
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(" 0.25 ") == 0.25
    assert parse_retry_after(format_datetime(now + timedelta(seconds=10), usegmt=True), now) == 10.0
    assert parse_retry_after(format_datetime(now - timedelta(seconds=10), usegmt=True), now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_a_policy_of_no_attempts_is_refused() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)


# --- answers read into errors and reports -------------------------------------------------


def run(call: calls.Call[Any], *responses: httpx.Response) -> Any:
    """Drives `exchange` with the given answers, one per attempt, skipping the sleeps."""
    steps: Generator[Any, httpx.Response | None, Any] = exchange(
        call, "https://api.example", RetryPolicy(max_attempts=len(responses)), random.Random(0)
    )
    answers = iter(responses)
    step = next(steps)
    try:
        while True:
            if isinstance(step, Sleep):
                step = next(steps)
            else:
                assert isinstance(step, Send)
                step = steps.send(next(answers))
    except StopIteration as done:
        return done.value


def answer(status: int, body: Any = None, text: str = "", **headers: str) -> httpx.Response:
    if body is not None:
        return httpx.Response(status, json=body, headers=headers)
    return httpx.Response(status, text=text, headers=headers)


REPORT = {
    "id": "0b9c",
    "recipients": 3,
    "delivered": 2,
    "gone": 1,
    "failed": 0,
    "retries": 1,
    "deadline_reached": False,
    "store_failed": False,
}


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (400, {"error": "missing_target", "details": "name one target"}, BadRequestError),
        (400, {"error": "payload_too_large", "details": "too big"}, PayloadTooLargeError),
        (413, None, PayloadTooLargeError),
        (401, {"error": "unauthorized", "details": "missing x-api-key"}, UnauthorizedError),
        (403, {"message": "Forbidden"}, ForbiddenError),
        (404, {"error": "not_found", "details": "routes: …"}, NotFoundError),
        (405, {"error": "method_not_allowed", "details": "use POST"}, ClientError),
        (409, {"error": "conflict", "details": "being sent"}, ConflictError),
        (429, {"message": "Too Many Requests"}, RateLimitedError),
        (500, {"error": "internal_error", "details": "retry later"}, ServerError),
        (504, {"message": "Endpoint request timed out"}, ServerError),
    ],
)
def test_each_status_is_raised_as_its_error(status: int, body: Any, kind: type) -> None:
    response = answer(status, body, text="request body over 10 MB\n", **{"retry-after": "1"})
    with pytest.raises(kind) as raised:
        run(calls.broadcast(Broadcast(all=True, event="e")), response)
    error = raised.value
    assert isinstance(error, ApiError)
    assert error.status == status
    assert error.code == (body or {}).get("error")
    expected = (
        (body or {}).get("details") or (body or {}).get("message") or "request body over 10 MB"
    )
    assert error.details == expected
    assert error.retry_after == 1.0
    assert len(error.broadcast_ids) == 1


def test_the_last_attempts_error_is_raised_with_the_attempts_counted() -> None:
    with pytest.raises(ServerError) as raised:
        run(calls.connection_count(), answer(503, text="busy"), answer(502, text="bad gateway"))
    assert raised.value.status == 502 and raised.value.attempts == 2


def test_a_report_is_read_field_for_field() -> None:
    report = run(
        calls.broadcast(Broadcast(topic="room:1", event="e")),
        answer(200, {**REPORT, "offset": 4, "epoch": "9f2c", "replayed": True}),
    )
    assert report == BroadcastReport(
        id="0b9c",
        recipients=3,
        delivered=2,
        gone=1,
        failed=0,
        retries=1,
        deadline_reached=False,
        store_failed=False,
        offset=4,
        epoch="9f2c",
        replayed=True,
    )


RUNNING: dict[str, Any] = {
    **REPORT,
    "status": "running",
    "status_url": "/broadcasts/0b9c",
    "shards": 4,
}

STATUS: dict[str, Any] = {
    "id": "0b9c",
    "status": "running",
    "recipients": 5,
    "delivered": 4,
    "gone": 1,
    "failed": 0,
    "retries": 2,
    "continuations": 1,
    "restarts": 0,
    "offset": 9,
    "epoch": "9f2c",
    "created_at": 1000,
    "updated_at": 2000,
    "shards": [
        {
            "part": 0,
            "status": "done",
            "recipients": 2,
            "delivered": 2,
            "gone": 0,
            "failed": 0,
            "retries": 0,
            "runs": 2,
            "restarts": 0,
            "updated_at": 1500,
        },
        {
            "part": 1,
            "status": "waiting",
            "recipients": 0,
            "delivered": 0,
            "gone": 0,
            "failed": 0,
            "retries": 0,
            "runs": 1,
            "restarts": 0,
            "updated_at": 2000,
        },
    ],
}


def test_a_202_is_a_running_report_and_a_report_without_status_is_done() -> None:
    running = run(calls.broadcast(Broadcast(all=True, event="e")), answer(202, RUNNING))
    assert running.status == "running" and running.running
    assert (running.status_url, running.shards) == ("/broadcasts/0b9c", 4)
    # A bridge from before background broadcasts sends no status: its reports are all done.
    older = run(calls.broadcast(Broadcast(all=True, event="e")), answer(200, REPORT))
    assert older.status == "done" and not older.running
    assert (older.status_url, older.shards) == (None, None)


def test_a_batch_answered_202_holds_each_members_status() -> None:
    batch = run(
        calls.batch([Broadcast(all=True, event="a"), Broadcast(all=True, event="b")]),
        answer(202, {"results": [{**REPORT, "status": "done"}, RUNNING]}),
    )
    assert isinstance(batch, BatchReport) and batch.running
    assert [r.status for r in batch.results] == ["done", "running"]


def test_a_status_is_read_field_for_field() -> None:
    status = run(calls.broadcast_status("0b9c"), answer(200, STATUS))
    assert status == BroadcastStatus(
        id="0b9c",
        status="running",
        recipients=5,
        delivered=4,
        gone=1,
        failed=0,
        retries=2,
        continuations=1,
        restarts=0,
        created_at=1000,
        updated_at=2000,
        shards=[
            ShardStatus(0, "done", 2, 2, 0, 0, 0, runs=2, restarts=0, updated_at=1500),
            ShardStatus(1, "waiting", 0, 0, 0, 0, 0, runs=1, restarts=0, updated_at=2000),
        ],
        offset=9,
        epoch="9f2c",
    )
    assert status.running


@pytest.mark.parametrize(
    ("call", "body"),
    [
        (calls.broadcast_status("0b9c"), {**STATUS, "status": "finished"}),
        (
            calls.broadcast_status("0b9c"),
            {**STATUS, "shards": [{**STATUS["shards"][0], "status": "lost"}]},
        ),
        (
            calls.broadcast_status("0b9c"),
            {**STATUS, "shards": [{**STATUS["shards"][0], "runs": None}]},
        ),
        (calls.broadcast_status("0b9c"), {k: v for k, v in STATUS.items() if k != "shards"}),
        (calls.broadcast(Broadcast(all=True, event="e")), {**RUNNING, "status": "queued"}),
    ],
)
def test_a_status_of_another_shape_is_an_unexpected_response(
    call: calls.Call[Any], body: Any
) -> None:
    with pytest.raises(UnexpectedResponseError):
        run(call, answer(200, body))


@pytest.mark.parametrize(
    "body",
    [
        "<html>Sign in to the Wi-Fi</html>",
        {k: v for k, v in REPORT.items() if k != "delivered"},
        {**REPORT, "delivered": "2"},
        {**REPORT, "delivered": True},
        [REPORT],
    ],
)
def test_a_200_of_another_shape_is_an_unexpected_response(body: Any) -> None:
    response = answer(200, text=body) if isinstance(body, str) else answer(200, body)
    with pytest.raises(UnexpectedResponseError) as raised:
        run(calls.broadcast(Broadcast(all=True, event="e")), response)
    assert raised.value.status == 200


# --- what is sent -------------------------------------------------------------------------


def test_a_broadcast_sends_only_the_fields_given() -> None:
    assert Broadcast(topic="t", event="e").to_json() == {"topic": "t", "event": "e"}
    assert Broadcast(all=False, user_id="u", message=0).to_json() == {"user_id": "u", "message": 0}
    assert Broadcast(
        all=True, message=False, exclude_user="a", exclude_connection="c"
    ).to_json() == {
        "all": True,
        "message": False,
        "exclude_user": "a",
        "exclude_connection": "c",
    }
    assert Broadcast(topics=("a", "b"), connection_ids=["x"], event="e", data=[]).to_json() == {
        "topics": ["a", "b"],
        "connection_ids": ["x"],
        "event": "e",
        "data": [],
    }


def test_background_is_sent_as_async_only_when_asked() -> None:
    assert "async" not in Broadcast(all=True, event="e").to_json()
    assert Broadcast(all=True, event="e", background=True).to_json() == {
        "all": True,
        "event": "e",
        "async": True,
    }
    assert calls.broadcast(Broadcast(topic="t", event="e", background=True)).body["async"] is True


def test_a_status_path_holds_the_id_as_one_escaped_segment() -> None:
    call = calls.broadcast_status("order/42:paid+v=2@eu|x_y-z.w~")
    assert call.method == "GET"
    assert call.url("https://api.example/prod") == (
        "https://api.example/prod/broadcasts/order%2F42%3Apaid%2Bv%3D2%40eu%7Cx_y-z.w~"
    )
    with pytest.raises(ValueError, match="id"):
        calls.broadcast_status("")


@pytest.mark.parametrize(
    ("timeout", "poll_interval"),
    [(-1, 1), (float("nan"), 1), (float("inf"), 1), (10, 0), (10, -1), (10, float("nan"))],
)
def test_a_wait_needs_a_finite_timeout_and_a_positive_interval(
    timeout: float, poll_interval: float
) -> None:
    with pytest.raises(ValueError):
        Waiting("id", timeout, poll_interval)


def test_a_wait_pauses_at_most_its_interval_and_gives_up_after_its_timeout() -> None:
    still = BroadcastStatus.from_json(STATUS)
    assert Waiting("0b9c", 60, 0.5).pause(still) == 0.5
    assert 0 < Waiting("0b9c", 0.2, 5).pause(still) <= 0.2
    with pytest.raises(BroadcastTimeoutError) as raised:
        Waiting("0b9c", 0, 1).pause(still)
    assert isinstance(raised.value, TimeoutError)
    assert raised.value.last_status is still and raised.value.broadcast_ids == ("0b9c",)
    assert "4 of 5 delivered" in str(raised.value) and "part 1 waiting" in str(raised.value)


def test_every_broadcast_gets_an_id_once_and_keeps_the_callers() -> None:
    generated = calls.broadcast(Broadcast(all=True, event="e"))
    assert generated.body["id"] == generated.broadcast_ids[0]
    assert calls.broadcast(Broadcast(all=True, event="e", id="mine")).broadcast_ids == ("mine",)
    batch = calls.batch([Broadcast(all=True, event="a"), Broadcast(all=True, event="b", id="b-1")])
    ids = [member["id"] for member in batch.body["batch"]]
    assert ids[1] == "b-1" and ids[0] != ids[1]
    assert list(batch.broadcast_ids) == ids


def test_queries_are_escaped_as_sigv4_canonicalizes_them() -> None:
    call = calls.history("room:1/a b", 5, 41, "e+p=")
    assert call.url("https://api.example/prod") == (
        "https://api.example/prod/history?limit=5&since_epoch=e%2Bp%3D"
        "&since_offset=41&topic=room%3A1%2Fa%20b"
    )
    assert calls.connection_count().url("http://h") == "http://h/connections/count"


def test_client_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="not both"):
        Client("http://127.0.0.1:3000", auth=SigV4(), api_key="k")
    with pytest.raises(ValueError, match="http"):
        Client("127.0.0.1:3000")
    assert "secret" not in repr(ApiKey("secret"))


# --- SigV4's headers ----------------------------------------------------------------------


def test_sigv4_signs_host_body_and_session_token_for_the_urls_region() -> None:
    auth = SigV4(credentials=Credentials("AKIDEXAMPLE", "secret", "session-token"))
    request = httpx.Request(
        "POST",
        "https://abc123.execute-api.eu-west-1.amazonaws.com/broadcast",
        content=b'{"all":true,"event":"e"}',
        headers={"content-type": "application/json"},
    )
    auth.apply(request)
    authorization = request.headers["authorization"]
    assert authorization.startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/eu-west-1/execute-api/aws4_request" in authorization
    assert "SignedHeaders=content-type;host;x-amz-date;x-amz-security-token," in authorization
    assert request.headers["x-amz-security-token"] == "session-token"
    # AND signing again (a retry) replaces the signature instead of adding a second one
    auth.apply(request)
    assert len(request.headers.get_list("authorization")) == 1
