"""What the fake servers in :mod:`llmrun.testing` share: a real HTTP server on 127.0.0.1, faults, records.

:class:`FakeHTTPServer` binds an ephemeral loopback port and serves in a daemon
thread; it records every request (:class:`RecordedRequest`), checks the bearer key,
applies injected :class:`Fault`\\ s (error statuses with ``Retry-After``, delays,
stalls, malformed JSON, dropped connections, lost replies), bounds request sizes and
stall times, counts concurrent model calls, and stops by itself after
``idle_timeout_s`` without requests. A subclass answers in :meth:`FakeHTTPServer.respond`.
The fake Lamini server (:mod:`~llmrun.testing.lamini_server`) and the fake
OpenAI-compatible server (:mod:`~llmrun.testing.openai_server`) are built on it.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal

__all__ = ["MAX_BODY_BYTES", "MAX_RECORDED", "FakeHTTPServer", "Fault", "RecordedRequest"]

#: Largest request body a fake reads; bigger ones get 413.
MAX_BODY_BYTES = 32 * 1024 * 1024
#: Most requests kept in :attr:`FakeHTTPServer.requests`.
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


class FakeHTTPServer:
    """A fake API on 127.0.0.1. Use as a context manager, or :meth:`start` / :meth:`stop`.

    ``api_key``: the key requests must carry as ``Authorization: Bearer <key>``
    (``None`` accepts any non-empty key).
    """

    __test__ = False  # not a pytest test class
    #: The ``Server`` header, and the name in error messages.
    server_name = "FakeHTTP"

    def __init__(
        self, api_key: str | None = "test-key", *, max_stall_s: float = 30.0, idle_timeout_s: float = 600.0
    ) -> None:
        self.api_key = api_key
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
        """The server's root URL, e.g. ``http://127.0.0.1:54321``."""
        if self._httpd is None:
            raise RuntimeError(
                f"the fake {self.server_name} server is not running; use it as a context manager"
            )
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> Any:
        """Bind an ephemeral port on 127.0.0.1 and serve in a daemon thread."""
        if self._httpd is not None:
            return self
        self._stop.clear()
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        httpd.daemon_threads = True
        httpd.fake = self  # type: ignore[attr-defined]
        self._httpd = httpd
        self._last_activity = time.monotonic()
        self._started()
        serve = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        watch = threading.Thread(target=self._watchdog, daemon=True)
        self._threads = [serve, watch]
        for t in self._threads:
            t.start()
        return self

    def _started(self) -> None:
        """Hook: the port is bound (``url`` works), before serving starts."""

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

    def __enter__(self) -> Any:
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

    # ----------------------------------------------------------------- faults
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
        """The most model calls (completions) that were in progress at once."""
        return self._peak

    def reset(self) -> None:
        """Forget requests and faults (subclasses forget their own state too)."""
        with self._lock:
            self._requests.clear()
            self._faults.clear()
            self._peak = 0

    @contextlib.contextmanager
    def counting(self) -> Iterator[None]:
        """Count a model call in progress, for :attr:`peak_concurrency`."""
        with self._lock:
            self._in_flight += 1
            self._peak = max(self._peak, self._in_flight)
        try:
            yield
        finally:
            with self._lock:
                self._in_flight -= 1

    # ----------------------------------------------------------------- serving
    def respond(
        self, h: BaseHTTPRequestHandler, rec: RecordedRequest, raw: bytes, fault: Fault | None
    ) -> None:
        """Answer one request (already recorded; ``rec.body`` is None when it was not JSON).

        ``fault`` is a ``lost_reply`` fault to honour after the request is carried out,
        or None.
        """
        raise NotImplementedError

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        self._last_activity = time.monotonic()
        path = h.path.split("?", 1)[0]
        length = int(h.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            send(h, 413, {"detail": f"request body over {MAX_BODY_BYTES} bytes"})
            drop(h)
            return
        raw = h.rfile.read(length) if length else b""
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = None
        rec = RecordedRequest(method, path, dict(h.headers.items()), body, time.time())
        with self._lock:
            self._requests.append(rec)
            fault = self._take_fault(path)
        if fault is not None and self._apply_fault(h, fault):
            return
        self.respond(h, rec, raw, fault)

    def _take_fault(self, path: str) -> Fault | None:
        for armed in self._faults:
            if armed.path is None or fnmatch.fnmatchcase(path, armed.path):
                armed.remaining -= 1
                if armed.remaining <= 0:
                    self._faults.remove(armed)
                return armed.fault
        return None

    def _apply_fault(self, h: BaseHTTPRequestHandler, fault: Fault) -> bool:
        """Carry out ``fault``; True when the request is finished."""
        if fault.kind == "lost_reply":
            return False  # answered after the request is carried out, by respond()
        if fault.kind == "delay":
            self._stop.wait(fault.seconds)
            return False
        if fault.kind == "status":
            extra = {} if fault.retry_after is None else {"Retry-After": fmt_seconds(fault.retry_after)}
            send(h, fault.status, self.error_body(fault.status, fault.detail), extra)
        elif fault.kind == "malformed":
            send_raw(h, 200, b'{"output": "this reply was cut sh', {})
        elif fault.kind == "stall":
            self._stop.wait(self.max_stall_s if fault.seconds < 0 else min(fault.seconds, self.max_stall_s))
            drop(h)
        else:
            drop(h)
        return True

    def error_body(self, status: int, detail: str) -> Any:
        """The JSON body of an error reply (FastAPI's ``{"detail": ...}`` unless overridden)."""
        return {"detail": detail}

    def authorised(self, rec: RecordedRequest) -> bool:
        auth = rec.header("Authorization") or ""
        token = auth[len("Bearer ") :].strip() if auth.startswith("Bearer ") else ""
        return bool(token) and (self.api_key is None or token == self.api_key)

    def wait(self, seconds: float) -> None:
        """Sleep ``seconds``, or less when the server stops."""
        self._stop.wait(seconds)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def _fake(self) -> FakeHTTPServer:
        fake: FakeHTTPServer = self.server.fake  # type: ignore[attr-defined]
        return fake

    def version_string(self) -> str:
        return f"{self._fake().server_name}/1.0"

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


def fmt_seconds(s: float) -> str:
    return str(int(s)) if float(s).is_integer() else f"{s:g}"


def send(h: BaseHTTPRequestHandler, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
    send_raw(h, status, json.dumps(payload).encode("utf-8"), headers or {})


def send_raw(
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


def drop(h: BaseHTTPRequestHandler) -> None:
    h.close_connection = True
    with contextlib.suppress(OSError):
        h.connection.shutdown(socket.SHUT_RDWR)
