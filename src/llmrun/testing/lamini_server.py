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
itself after ``idle_timeout_s`` without requests: the HTTP side is
:class:`~llmrun.testing.fake_http.FakeHTTPServer`, shared with the fake
OpenAI-compatible server.
"""

from __future__ import annotations

import contextlib
import urllib.parse
from http.server import BaseHTTPRequestHandler
from typing import Any

from llmrun.testing import lamini_wire as wire
from llmrun.testing.fake_http import FakeHTTPServer, Fault, RecordedRequest, send, send_raw

__all__ = ["FakeLaminiServer", "Fault", "RecordedRequest"]


class FakeLaminiServer(FakeHTTPServer):
    """The fake Lamini API. Use as a context manager, or :meth:`start` / :meth:`stop`.

    ``api_key``: the key requests must carry as ``Authorization: Bearer <key>``
    (``None`` accepts any non-empty key). ``job_plan``: statuses a new tuning job
    goes through, one per status poll. ``latency_s``: delay added to every
    completion. ``max_batch``: largest list prompt accepted (400 above it).
    ``models``: if given, other model names get Lamini's 594 "model not found".
    """

    server_name = "FakeLamini"

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
        super().__init__(api_key, max_stall_s=max_stall_s, idle_timeout_s=idle_timeout_s)
        #: The API's state and behaviour (scripts, datasets, jobs), shared by all requests.
        self.api = wire.FakeLaminiAPI(job_plan, max_batch, models)
        self.latency_s = latency_s

    # ----------------------------------------------------------------- lifecycle
    def env(self) -> dict[str, str]:
        """Environment variables that point the ``lamini`` client (and llmrun) at this server."""
        return {"LAMINI_API_URL": self.url, "LAMINI_API_KEY": self.api_key or "any-key"}

    def start(self) -> FakeLaminiServer:
        """Bind an ephemeral port on 127.0.0.1 and serve in a daemon thread."""
        super().start()
        return self

    def __enter__(self) -> FakeLaminiServer:
        return self.start()

    def _started(self) -> None:
        self.api.blob_base_url = self.url + wire.BLOB_PREFIX

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

    # ----------------------------------------------------------------- observing
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
        super().reset()
        self.api.reset()

    # ----------------------------------------------------------------- serving
    def respond(
        self, h: BaseHTTPRequestHandler, rec: RecordedRequest, raw: bytes, fault: Fault | None
    ) -> None:
        path, method = rec.path, rec.method
        if path.startswith(wire.BLOB_PREFIX + "/"):  # signed blob URLs carry no bearer key
            query = dict(urllib.parse.parse_qsl(h.path.partition("?")[2]))
            status, headers, data = self.api.blob(method, path, query, raw)
            send_raw(h, status, data, headers, head=method == "HEAD")
            return
        if not self.authorised(rec):
            send(h, 401, {"detail": "Invalid API key. Check your LAMINI_API_KEY."})
            return
        if raw and rec.body is None:
            send(h, 422, {"detail": "request body is not valid JSON"})
            return
        body = rec.body if isinstance(rec.body, dict) else {}
        counted = self.counting() if path == "/v1/completions" else contextlib.nullcontext()
        try:
            with counted:
                if path == "/v1/completions" and self.latency_s:
                    self.wait(self.latency_s)
                payload = self.api.handle(method, path, body)
        except wire.WireError as e:
            send(h, e.status, {"detail": e.detail})
            return
        if fault is not None and fault.kind == "lost_reply":
            send(h, fault.status, {"detail": fault.detail})
            return
        send(h, 200, payload)
