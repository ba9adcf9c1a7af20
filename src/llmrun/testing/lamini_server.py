"""A fake Lamini API server on 127.0.0.1, for offline tests of Lamini code.

It is a real HTTP server (so the real ``lamini`` client, ``requests`` and
``aiohttp`` all talk to it) that speaks the wire format described in
:mod:`llmrun.testing.lamini_wire`: completions (typed, untyped, batched), data
upload, tuning jobs whose status moves along a configurable plan, eval results.
It records every request, answers scripted replies, checks the API key and
injects faults (error statuses with Retry-After, delays, stalls, malformed JSON,
dropped connections). Tuning jobs follow ``job_plan`` (one status per poll; a
FAILED status carries ``failure_message``), and with ``upload_mode = "azure"``
the data goes through the fake's own signed blob URLs, as Lamini's hosted
service has the client upload to Azure storage::

    with FakeLaminiServer(api_key="test-key") as server:
        server.script("Q: 2+2?", "4")
        runner = llmrun.load("m", backend="lamini", api_key="test-key", api_url=server.url)
        server.fail(429, "slow down", retry_after=0.01)   # the next request only; llmrun retries it
        assert runner("Q: 2+2?") == "4"
        assert len(server.requests_to("/v1/completions")) == 2

pytest fixtures, in the plugin ``llmrun.testing.fixtures``:
``fake_lamini_server`` (one server per test module), ``fake_lamini`` (that
server, reset before the test) and ``fake_lamini_env`` (plus ``LAMINI_API_URL``
/ ``LAMINI_API_KEY`` set to it).

It only listens on loopback, bounds request sizes and stall times, and stops by
itself after ``idle_timeout_s`` without requests.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import socket
import threading
import time
import urllib.parse
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal

from llmrun.testing import lamini_wire as wire

__all__ = ["FakeLaminiServer", "Fault", "RecordedRequest"]

#: Largest request body the fake reads; bigger ones get 413.
MAX_BODY_BYTES = 32 * 1024 * 1024
#: Most requests kept in :attr:`FakeLaminiServer.requests`.
MAX_RECORDED = 10_000

FaultKind = Literal["status", "delay", "stall", "malformed", "drop", "lost_reply"]


@dataclass(frozen=True)
class Fault:
    """One injected failure. Build them with the class methods."""

    kind: FaultKind
    status: int = 500
    detail: str = "Internal Server Error"
    retry_after: float | None = None
    seconds: float = 0.0

    @classmethod
    def error(cls, status: int, detail: str = "injected error", retry_after: float | None = None) -> Fault:
        """Answer ``status`` with ``{"detail": detail}`` (and ``Retry-After`` if given)."""
        return cls("status", status=status, detail=detail, retry_after=retry_after)

    @classmethod
    def delay(cls, seconds: float) -> Fault:
        """Wait ``seconds``, then answer normally."""
        return cls("delay", seconds=seconds)

    @classmethod
    def stall(cls, seconds: float | None = None) -> Fault:
        """Hold the connection without answering (for ``seconds`` or the server's max), then drop it."""
        return cls("stall", seconds=-1.0 if seconds is None else seconds)

    @classmethod
    def malformed_json(cls) -> Fault:
        """Answer 200 with a truncated JSON body."""
        return cls("malformed")

    @classmethod
    def drop(cls) -> Fault:
        """Close the connection without any response."""
        return cls("drop")

    @classmethod
    def lost_reply(cls, status: int = 502, detail: str = "Bad Gateway") -> Fault:
        """Carry the request out (a job starts, data is stored), then answer ``status`` instead of the result.

        A proxy losing the reply of a call that worked: what a blind retry of a call
        that is not idempotent turns into a second job.
        """
        return cls("lost_reply", status=status, detail=detail)


@dataclass
class _Armed:
    fault: Fault
    remaining: int
    path: str | None


@dataclass(frozen=True)
class RecordedRequest:
    """A request the fake received. ``body`` is the parsed JSON (``None`` if none or invalid)."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    time: float = field(default=0.0, compare=False)

    def header(self, name: str) -> str | None:
        """A header by case-insensitive name."""
        low = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == low), None)


class FakeLaminiServer:
    """The fake Lamini API. Use as a context manager, or :meth:`start` / :meth:`stop`.

    ``api_key``: the key requests must carry as ``Authorization: Bearer <key>``
    (``None`` accepts any non-empty key). ``job_plan``: statuses a new tuning job
    goes through, one per status poll. ``latency_s``: delay added to every
    completion. ``max_batch``: largest list prompt accepted (400 above it).
    ``models``: if given, other model names get Lamini's 594 "model not found".
    """

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        api_key: str | None = "test-key",
        *,
        job_plan: tuple[str, ...] = wire.DEFAULT_JOB_PLAN,
        latency_s: float = 0.0,
        max_batch: int | None = None,
        models: set[str] | None = None,
        max_stall_s: float = 30.0,
        idle_timeout_s: float = 600.0,
    ) -> None:
        #: The API's state and behaviour (scripts, datasets, jobs), shared by all requests.
        self.api = wire.FakeLaminiAPI(job_plan, max_batch, models)
        self.api_key = api_key
        self.latency_s = latency_s
        self.max_stall_s = max_stall_s
        self.idle_timeout_s = idle_timeout_s
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._faults: list[_Armed] = []
        self._requests: deque[RecordedRequest] = deque(maxlen=MAX_RECORDED)
        self._in_flight = 0
        self._peak = 0
        self._last_activity = time.monotonic()
        self._httpd: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []

    # ----------------------------------------------------------------- lifecycle
    @property
    def url(self) -> str:
        """The base URL to give the client as ``api_url``, e.g. ``http://127.0.0.1:54321``."""
        if self._httpd is None:
            raise RuntimeError("the fake Lamini server is not running; use it as a context manager")
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def env(self) -> dict[str, str]:
        """Environment variables that point the ``lamini`` client (and llmrun) at this server."""
        return {"LAMINI_API_URL": self.url, "LAMINI_API_KEY": self.api_key or "any-key"}

    def start(self) -> FakeLaminiServer:
        """Bind an ephemeral port on 127.0.0.1 and serve in a daemon thread."""
        if self._httpd is not None:
            return self
        self._stop.clear()
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        httpd.daemon_threads = True
        httpd.fake = self  # type: ignore[attr-defined]
        self._httpd = httpd
        self.api.blob_base_url = self.url + wire.BLOB_PREFIX
        self._last_activity = time.monotonic()
        serve = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        watch = threading.Thread(target=self._watchdog, daemon=True)
        self._threads = [serve, watch]
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        """Stop serving, end stalled requests and free the port. Safe to call twice."""
        self._stop.set()
        with self._lock:
            httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(timeout=5)
        self._threads = []

    @property
    def running(self) -> bool:
        return self._httpd is not None

    def __enter__(self) -> FakeLaminiServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _watchdog(self) -> None:
        while not self._stop.wait(min(0.2, self.idle_timeout_s)):
            if time.monotonic() - self._last_activity > self.idle_timeout_s:
                self.stop()  # nobody has called for a while: free the port
                return

    # ----------------------------------------------------------------- scripting
    @property
    def job_plan(self) -> tuple[str, ...]:
        """Statuses that jobs created from now on go through, one per status poll."""
        return self.api.job_plan

    @job_plan.setter
    def job_plan(self, plan: tuple[str, ...]) -> None:
        if not plan:
            raise ValueError("job_plan must name at least one status, e.g. ('RUNNING', 'COMPLETED')")
        self.api.job_plan = tuple(plan)

    @property
    def upload_mode(self) -> str:
        """``"local"`` (data in ``POST /v1/local-data``) or ``"azure"`` (through the fake's blob store)."""
        return self.api.upload_mode

    @upload_mode.setter
    def upload_mode(self, mode: str) -> None:
        if mode not in ("local", "azure"):
            raise ValueError(f"upload_mode must be 'local' or 'azure', got {mode!r}")
        self.api.upload_mode = mode

    @property
    def failure_message(self) -> str:
        """The ``message`` in the status of FAILED jobs created from now on."""
        return self.api.failure_message

    @failure_message.setter
    def failure_message(self, message: str) -> None:
        self.api.failure_message = message

    @property
    def responder(self) -> wire.Responder | None:
        """Fallback for prompts without a script: ``f(prompt, output_type) -> reply``."""
        return self.api.responder

    @responder.setter
    def responder(self, fn: wire.Responder | None) -> None:
        self.api.responder = fn

    def script(self, prompt: str, reply: wire.Reply) -> None:
        """Answer ``prompt`` with ``reply`` (text, a typed dict, or ``f(prompt, output_type)``)."""
        with self.api.lock:
            self.api.scripts[prompt] = reply

    def inject(self, fault: Fault, times: int = 1, path: str | None = None) -> None:
        """Apply ``fault`` to the next ``times`` requests whose path matches ``path`` (a glob)."""
        if times < 1:
            raise ValueError("times must be >= 1")
        with self._lock:
            self._faults.append(_Armed(fault, times, path))

    def fail(
        self,
        status: int,
        detail: str = "injected error",
        *,
        retry_after: float | None = None,
        times: int = 1,
        path: str | None = None,
    ) -> None:
        """Shorthand for ``inject(Fault.error(status, detail, retry_after), times, path)``."""
        self.inject(Fault.error(status, detail, retry_after), times, path)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    # ----------------------------------------------------------------- observing
    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far (the latest :data:`MAX_RECORDED`), oldest first."""
        with self._lock:
            return list(self._requests)

    def requests_to(self, path: str, method: str | None = None) -> list[RecordedRequest]:
        """Received requests whose path matches the glob ``path``."""
        return [
            r
            for r in self.requests
            if fnmatch.fnmatchcase(r.path, path) and (method is None or r.method == method)
        ]

    @property
    def last_request(self) -> RecordedRequest | None:
        with self._lock:
            return self._requests[-1] if self._requests else None

    @property
    def peak_concurrency(self) -> int:
        """The most completion requests that were in progress at once."""
        return self._peak

    @property
    def jobs(self) -> dict[int, wire.FakeJob]:
        """Tuning jobs by id."""
        with self.api.lock:
            return dict(self.api.jobs)

    @property
    def datasets(self) -> dict[str, list[dict[str, Any]]]:
        """Uploaded datasets by id."""
        with self.api.lock:
            return dict(self.api.datasets)

    def reset(self) -> None:
        """Forget requests, scripts, faults, datasets and jobs."""
        with self._lock:
            self._requests.clear()
            self._faults.clear()
            self._peak = 0
        self.api.reset()

    # ----------------------------------------------------------------- serving
    def _handle(self, h: _Handler, method: str) -> None:
        self._last_activity = time.monotonic()
        path = h.path.split("?", 1)[0]
        length = int(h.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            _send(h, 413, {"detail": f"request body over {MAX_BODY_BYTES} bytes"})
            _drop(h)
            return
        raw = h.rfile.read(length) if length else b""
        try:
            body: Any = json.loads(raw) if raw else None
            bad_json = False
        except ValueError:
            body, bad_json = None, True
        rec = RecordedRequest(method, path, dict(h.headers.items()), body, time.time())
        with self._lock:
            self._requests.append(rec)
            fault = self._take_fault(path)
        if fault is not None and self._apply_fault(h, fault):
            return
        if path.startswith(wire.BLOB_PREFIX + "/"):  # signed blob URLs carry no bearer key
            query = dict(urllib.parse.parse_qsl(h.path.partition("?")[2]))
            status, headers, data = self.api.blob(method, path, query, raw)
            _send_raw(h, status, data, headers, head=method == "HEAD")
            return
        if not self._authorised(rec):
            _send(h, 401, {"detail": "Invalid API key. Check your LAMINI_API_KEY."})
            return
        if bad_json:
            _send(h, 422, {"detail": "request body is not valid JSON"})
            return
        is_completion = path == "/v1/completions"
        if is_completion:
            with self._lock:
                self._in_flight += 1
                self._peak = max(self._peak, self._in_flight)
        try:
            if is_completion and self.latency_s:
                self._stop.wait(self.latency_s)
            payload = self.api.handle(method, path, body if isinstance(body, dict) else {})
        except wire.WireError as e:
            _send(h, e.status, {"detail": e.detail})
            return
        finally:
            if is_completion:
                with self._lock:
                    self._in_flight -= 1
        if fault is not None and fault.kind == "lost_reply":
            _send(h, fault.status, {"detail": fault.detail})
            return
        _send(h, 200, payload)

    def _take_fault(self, path: str) -> Fault | None:
        for armed in self._faults:
            if armed.path is None or fnmatch.fnmatchcase(path, armed.path):
                armed.remaining -= 1
                if armed.remaining <= 0:
                    self._faults.remove(armed)
                return armed.fault
        return None

    def _apply_fault(self, h: _Handler, fault: Fault) -> bool:
        """Carry out ``fault``; True when the request is finished."""
        if fault.kind == "lost_reply":
            return False  # answered after the request is carried out, in _handle
        if fault.kind == "delay":
            self._stop.wait(fault.seconds)
            return False
        if fault.kind == "status":
            extra = {} if fault.retry_after is None else {"Retry-After": _fmt_seconds(fault.retry_after)}
            _send(h, fault.status, {"detail": fault.detail}, extra)
        elif fault.kind == "malformed":
            _send_raw(h, 200, b'{"output": "this reply was cut sh', {})
        elif fault.kind == "stall":
            self._stop.wait(self.max_stall_s if fault.seconds < 0 else min(fault.seconds, self.max_stall_s))
            _drop(h)
        else:
            _drop(h)
        return True

    def _authorised(self, rec: RecordedRequest) -> bool:
        auth = rec.header("Authorization") or ""
        token = auth[len("Bearer ") :].strip() if auth.startswith("Bearer ") else ""
        return bool(token) and (self.api_key is None or token == self.api_key)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    server_version = "FakeLamini/1.0"

    def _fake(self) -> FakeLaminiServer:
        fake: FakeLaminiServer = self.server.fake  # type: ignore[attr-defined]
        return fake

    def do_GET(self) -> None:
        self._fake()._handle(self, "GET")

    def do_POST(self) -> None:
        self._fake()._handle(self, "POST")

    def do_DELETE(self) -> None:
        self._fake()._handle(self, "DELETE")

    def do_PUT(self) -> None:
        self._fake()._handle(self, "PUT")

    def do_HEAD(self) -> None:
        self._fake()._handle(self, "HEAD")

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read .requests instead
        pass


def _fmt_seconds(s: float) -> str:
    return str(int(s)) if float(s).is_integer() else f"{s:g}"


def _send(
    h: BaseHTTPRequestHandler, status: int, payload: Any, headers: dict[str, str] | None = None
) -> None:
    _send_raw(h, status, json.dumps(payload).encode("utf-8"), headers or {})


def _send_raw(
    h: BaseHTTPRequestHandler, status: int, data: bytes, headers: dict[str, str], *, head: bool = False
) -> None:
    """Answer ``status`` with ``data`` (no body for ``head``, whose headers may set Content-Length)."""
    headers = {"Content-Type": "application/json", "Content-Length": str(len(data)), **headers}
    try:
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        h.end_headers()
        if not head:
            h.wfile.write(data)
    except OSError:  # the client went away (e.g. it timed out); nothing to answer
        pass


def _drop(h: BaseHTTPRequestHandler) -> None:
    h.close_connection = True
    with contextlib.suppress(OSError):
        h.connection.shutdown(socket.SHUT_RDWR)
