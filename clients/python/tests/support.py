"""The real things the tests run against: the local gateway binary, WebSocket subscribers
connected with dev tokens, and a small HTTP proxy that fails on cue in front of the gateway
(the only fake: API Gateway's 5xx, 429 and dropped connections cannot be had otherwise)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import httpx
from websockets.asyncio.client import ClientConnection as AsyncConnection
from websockets.asyncio.client import connect as connect_async
from websockets.sync.client import ClientConnection, connect

REPO = Path(__file__).resolve().parents[3]
CHANNELS = Path(__file__).resolve().parent / "channels.json"

# Long enough for a loaded 2-core machine; a message that has not come by then is lost.
RECEIVE_TIMEOUT = 10.0


def local_binary() -> Path:
    """The `wsbridge-local` binary: WSBRIDGE_LOCAL_BIN, else the workspace's debug build.
    Missing, the tests fail: they never skip."""
    configured = os.environ.get("WSBRIDGE_LOCAL_BIN")
    path = Path(configured) if configured else REPO / "target" / "debug" / "wsbridge-local"
    if not path.is_file():
        raise RuntimeError(
            f"wsbridge-local not found at {path}: build it with "
            "`cargo build -p wsbridge-local --locked` or run scripts/test-python.sh "
            "(or set WSBRIDGE_LOCAL_BIN)"
        )
    return path


def unique(prefix: str) -> str:
    """A name no other test uses: tests share one gateway."""
    return f"{prefix}{uuid.uuid4().hex[:12]}"


# Environment variables the gateway reads for its settings.
_GATEWAY_SETTINGS = (
    "AWS_",
    "BROADCAST_",
    "JWT_",
    "WSBRIDGE_",
    "CHANNELS_CONFIG",
    "MAX_",
    "RATE_LIMIT_",
    "CONNECTION_",
    "FANOUT_",
    "TABLE_NAME",
)


class Gateway:
    """One `wsbridge-local` process on free loopback ports, stopped by its PID."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.binary = local_binary()
        self.log = tempfile.NamedTemporaryFile(
            prefix="wsbridge-local-", suffix=".log", delete=False
        )
        # Only what the test gives: a developer's own JWT_SECRET, API key or AWS identity
        # in the environment must not change what the gateway accepts.
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(_GATEWAY_SETTINGS)}
        self.env = {**inherited, **env}
        # The log goes to a file, not a pipe nobody reads: a full pipe would stall the
        # gateway's logging and with it every request.
        self.process = subprocess.Popen(
            [str(self.binary), "--ws-port", "0", "--http-port", "0", *args],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=self.env,
        )
        self.ws_url, self.http_url = self._wait_for_banner()
        self._tokens: dict[str, str] = {}

    def _wait_for_banner(self) -> tuple[str, str]:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            text = Path(self.log.name).read_text(errors="replace")
            ws = re.search(r"WebSocket API\s+(ws://\S+)", text)
            http = re.search(r"broadcast API\s+(http://\S+)/broadcast", text)
            if ws and http:
                return ws.group(1), http.group(1)
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"wsbridge-local did not start; its output:\n{self.output()}")

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def token(self, user: str) -> str:
        """A dev token for `user`, from the gateway's own `token` subcommand."""
        if user not in self._tokens:
            self._tokens[user] = subprocess.run(
                [str(self.binary), "token", "--sub", user],
                check=True,
                capture_output=True,
                text=True,
                env=self.env,
            ).stdout.strip()
        return self._tokens[user]

    def connect(self, user: str) -> Subscriber:
        return Subscriber(f"{self.ws_url}/?token={self.token(user)}", user)

    def post(self, connection_ids: list[str], message: Any) -> None:
        """`POST @connections/{id}` to each connection in turn: one message to each, as a
        backend's own management client sends it."""
        management = self.ws_url.replace("ws://", "http://", 1)
        with httpx.Client(base_url=management, timeout=30) as http:
            for connection_id in connection_ids:
                response = http.post(f"/@connections/{connection_id}", json=message)
                assert response.status_code == 200, (response.status_code, response.text)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


class Subscriber:
    """A WebSocket client of the bridge: sends frames with a `ref` and waits for the reply
    with that `ref`; messages pushed meanwhile are kept, in order, for `next_message`."""

    def __init__(self, url: str, user: str) -> None:
        self._stack = ExitStack()
        self.socket: ClientConnection = self._stack.enter_context(connect(url, open_timeout=30))
        self.user = user
        self.pushed: list[Any] = []
        self._refs = 0
        whoami = self.request({"action": "whoami"})
        self.connection_id: str = whoami["connection_id"]

    def request(self, frame: dict[str, Any]) -> Any:
        self._refs += 1
        ref = self._refs
        self.socket.send(json.dumps({**frame, "ref": ref}))
        while True:
            received = json.loads(self.socket.recv(timeout=RECEIVE_TIMEOUT))
            if isinstance(received, dict) and received.get("ref") == ref:
                return received
            self.pushed.append(received)

    def subscribe(self, *topics: str) -> None:
        reply = self.request({"action": "subscribe", "topics": list(topics)})
        assert reply.get("action") == "subscribed", reply

    def next_message(self) -> Any:
        """The next message pushed to this connection (waits for it)."""
        if self.pushed:
            return self.pushed.pop(0)
        return json.loads(self.socket.recv(timeout=RECEIVE_TIMEOUT))

    def close(self) -> None:
        self._stack.close()


class FlakyProxy:
    """An HTTP proxy in front of the gateway that misbehaves for the next requests as
    scripted, then forwards faithfully. Script entries:

    - ``"503"``, ``"409"``, ``"429"``: answer that status without forwarding;
    - ``"429:<seconds>"``: 429 with ``Retry-After: <seconds>``;
    - ``"forward-then-503"``: forward, then answer 503 (the bridge's answer is lost);
    - ``"forward-then-drop"``: forward, then close the connection without an answer;
    - ``"drop"``: close the connection without forwarding;
    - ``"hold:<seconds>"``: wait, then forward (a client with a shorter timeout has given up
      and retried meanwhile: the held attempt reaches the bridge after the retry).
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.script: list[str] = []
        self.seen: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._in_flight = 0
        self._http = httpx.Client(timeout=60)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                proxy.counted(self)

            def do_POST(self) -> None:
                proxy.counted(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def counted(self, handler: BaseHTTPRequestHandler) -> None:
        with self._lock:
            self._in_flight += 1
        try:
            self.handle(handler)
        finally:
            with self._lock:
                self._in_flight -= 1
                self._idle.notify_all()

    def wait_idle(self) -> None:
        """Until every request that reached the proxy has been handled (held ones included)."""
        with self._lock:
            assert self._idle.wait_for(lambda: self._in_flight == 0, timeout=60)

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("content-length") or 0)
        body = handler.rfile.read(length) if length else b""
        with self._lock:
            behaviour = self.script.pop(0) if self.script else "forward"
            self.seen.append(
                {
                    "method": handler.command,
                    "path": handler.path,
                    "body": json.loads(body) if body else None,
                    "behaviour": behaviour,
                }
            )
        if behaviour == "drop":
            handler.close_connection = True
            return
        if behaviour.split(":")[0] in ("503", "409", "429"):
            status, _, retry_after = behaviour.partition(":")
            headers = {"Retry-After": retry_after} if retry_after else {}
            error = {"503": "Service Unavailable", "409": "conflict", "429": "Too Many Requests"}
            answer = (
                {"error": "conflict", "details": "a broadcast with this id is being sent"}
                if status == "409"
                else {"message": error[status]}
            )
            self._answer(handler, int(status), json.dumps(answer).encode(), headers)
            return
        if behaviour.startswith("hold:"):
            time.sleep(float(behaviour.partition(":")[2]))
        forwarded = self._http.request(
            handler.command,
            self.upstream + handler.path,
            content=body,
            headers={
                k: v
                for k, v in handler.headers.items()
                if k.lower() in ("content-type", "x-api-key")
            },
        )
        if behaviour == "forward-then-drop":
            handler.close_connection = True
            return
        if behaviour == "forward-then-503":
            self._answer(handler, 503, b'{"message":"Service Unavailable"}', {})
            return
        self._answer(handler, forwarded.status_code, forwarded.content, {})

    @staticmethod
    def _answer(
        handler: BaseHTTPRequestHandler, status: int, body: bytes, headers: dict[str, str]
    ) -> None:
        try:
            handler.send_response(status)
            handler.send_header("content-type", "application/json")
            handler.send_header("content-length", str(len(body)))
            for name, value in headers.items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            # A client that timed out has closed its end: its answer goes nowhere.
            handler.close_connection = True

    def broadcast_ids(self) -> list[str | None]:
        """The `id` of every /broadcast request that reached the proxy, in order."""
        return [
            s["body"].get("id") for s in self.seen if s["path"].endswith("/broadcast") and s["body"]
        ]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._http.close()


@dataclass
class Listener:
    """One connection of a `Crowd`: its id, and how many times each envelope id reached it."""

    socket: AsyncConnection
    connection_id: str
    received: Counter[str] = field(default_factory=Counter)


class Crowd:
    """`size` real WebSocket connections of one user, all subscribed to `topic`, each
    counting the envelopes it receives by their `id`. They run on an event loop of their own
    thread, so blocking and asyncio tests alike can broadcast to them and read the counts."""

    #: Handshakes in flight at once while the crowd connects.
    OPENING = 25

    def __init__(self, gateway: Gateway, size: int, topic: str, user: str) -> None:
        self.gateway = gateway
        self.topic = topic
        self.size = size
        self._url = f"{gateway.ws_url}/?token={gateway.token(user)}"
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._readers: list[asyncio.Task[None]] = []
        self.listeners: list[Listener] = []
        try:
            self._run(self._open_all())
        except BaseException:
            self.close()
            raise

    def _run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=300)

    async def _open_all(self) -> None:
        opening = asyncio.Semaphore(self.OPENING)

        async def one() -> Listener:
            async with opening:
                return await self._open()

        self.listeners = list(await asyncio.gather(*(one() for _ in range(self.size))))

    async def _open(self) -> Listener:
        socket = await connect_async(self._url, open_timeout=60, max_queue=None)
        await socket.send(json.dumps({"action": "whoami", "ref": 1}))
        whoami = json.loads(await asyncio.wait_for(socket.recv(), RECEIVE_TIMEOUT))
        await socket.send(json.dumps({"action": "subscribe", "topic": self.topic, "ref": 2}))
        subscribed = json.loads(await asyncio.wait_for(socket.recv(), RECEIVE_TIMEOUT))
        assert subscribed.get("action") == "subscribed", subscribed
        listener = Listener(socket, whoami["connection_id"])
        self._readers.append(asyncio.get_running_loop().create_task(self._read(listener)))
        return listener

    @staticmethod
    async def _read(listener: Listener) -> None:
        async for frame in listener.socket:
            message = json.loads(frame)
            if isinstance(message, dict) and isinstance(message.get("id"), str):
                listener.received[message["id"]] += 1

    def counts(self, message_id: str) -> list[int]:
        """How many times each connection has received `message_id` so far."""
        return [listener.received[message_id] for listener in self.listeners]

    def wait_until(self, check: Callable[[], bool], what: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
            time.sleep(0.05)

    def received_once(self, message_id: str) -> list[int]:
        """Waits until every connection has `message_id`, then until a marker posted to
        each connection after it has arrived (a connection's messages arrive in the order
        posted, so a second copy posted before the marker would be counted by then), and
        returns the counts: one per connection."""
        self.wait_until(
            lambda: min(self.counts(message_id)) >= 1, f"every listener got {message_id}"
        )
        marker = unique("marker-")
        self.gateway.post([listener.connection_id for listener in self.listeners], {"id": marker})
        self.wait_until(lambda: min(self.counts(marker)) >= 1, "every listener got the marker")
        return self.counts(message_id)

    def close(self) -> None:
        async def close_all() -> None:
            for reader in self._readers:
                reader.cancel()
            await asyncio.gather(*(listener.socket.close() for listener in self.listeners))

        try:
            self._run(close_all())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)
            self._loop.close()
