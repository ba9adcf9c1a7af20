"""The scheduler: one thread owns the engine's step-level batch; requests join and leave between steps.

Request handlers (on the event loop) prepare rows on worker threads
(:meth:`Scheduler.prepare`: the prompt checked against the context, a typed row's grammar
built), then :meth:`Scheduler.submit` them. The scheduler thread admits waiting rows while the
batch has room (``max_batch_size``), runs one :meth:`~llmrun.backends.local.stepping.EngineBatch.step`
for every running row, typed and untyped mixed, and hands each request its events on its own
event loop: text deltas for streams, the :class:`~llmrun.runner.Completion` when a row ends, or
an error (timeout, shutdown, a failed step). A request that goes away cancels its rows; they
leave at the next step. Rows waiting or running are bounded by ``max_queue``; past it
:meth:`submit` raises :class:`~llmrun.serve.errors.QueueFullError` (429 with Retry-After).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Literal

from llmrun.backends.local.engine import LocalEngine
from llmrun.backends.local.stepping import Row
from llmrun.generation import GenerationConfig
from llmrun.runner import Completion, OutputSpec
from llmrun.serve.errors import QueueFullError, ServeError
from llmrun.serve.metrics import Metrics

__all__ = ["Event", "Scheduler", "Ticket"]

log = logging.getLogger("llmrun.serve")

EventKind = Literal["delta", "done", "error"]


@dataclass(frozen=True)
class Event:
    """What a request hears about one of its rows: ``index`` is the row's place in the request."""

    index: int
    kind: EventKind
    payload: Any  # str (delta), Completion (done) or ServeError (error)


@dataclass(eq=False)
class Ticket:
    """One row of one request, and where its events go."""

    row: Row
    index: int
    stream: bool
    deadline: float
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue[Event]
    closed: bool = False

    def send(self, kind: EventKind, payload: Any) -> None:
        """Hand an event to the request's event loop (from the scheduler thread)."""
        if self.closed:
            return
        if kind != "delta":
            self.closed = True
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is listening
            self.loop.call_soon_threadsafe(self.events.put_nowait, Event(self.index, kind, payload))


class Scheduler:
    """Dynamic batching over one :class:`LocalEngine`; see the module doc."""

    def __init__(self, engine: LocalEngine, *, max_batch_size: int, max_queue: int, metrics: Metrics) -> None:
        self.engine = engine
        self.max_batch_size = max_batch_size
        self.max_queue = max_queue
        self.metrics = metrics
        self._batch = engine.batch()
        self._waiting: deque[Ticket] = deque()
        self._running: list[Ticket] = []
        self._cond = threading.Condition()
        self._closing = False
        self._stopped = False
        self._thread: threading.Thread | None = None
        #: Recent seconds per step, for Retry-After.
        self._step_s = 0.05

    # ------------------------------------------------------------------ any thread
    def prepare(self, prompt: str | list[int], config: GenerationConfig, output: OutputSpec | None) -> Row:
        """A checked row (run it on a worker thread: it tokenizes and may compile a grammar)."""
        return self._batch.prepare(prompt, config, output)

    def submit(self, rows: list[Row], *, stream: bool, timeout_s: float) -> list[Ticket]:
        """Queue a request's rows together (all or none); their events go to one queue on this loop."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Event] = asyncio.Queue()
        deadline = time.monotonic() + timeout_s
        tickets = [Ticket(row, i, stream, deadline, loop, events) for i, row in enumerate(rows)]
        with self._cond:
            if self._closing:
                raise ServeError(
                    503, "the server is shutting down; retry on another server", code="shutting_down"
                )
            if len(self._waiting) + len(self._running) + len(rows) > self.max_queue:
                self.metrics.rejected.inc()
                raise QueueFullError(self.max_queue, self._retry_after())
            self._waiting.extend(tickets)
            self.metrics.queue_depth.set(len(self._waiting))
            self._cond.notify()
        return tickets

    def cancel(self, tickets: list[Ticket], why: str) -> None:
        """Stop these rows (the request went away); nothing more is sent for them."""
        with self._cond:
            for t in tickets:
                if t.closed:
                    continue
                t.closed = True
                t.row.cancel()
                self.metrics.cancelled.labels(why).inc()
                if t in self._waiting:
                    self._waiting.remove(t)
            self.metrics.queue_depth.set(len(self._waiting))

    @property
    def depth(self) -> tuple[int, int]:
        """Rows waiting, rows running."""
        with self._cond:
            return len(self._waiting), len(self._running)

    @property
    def accepting(self) -> bool:
        """Whether new requests are taken (not shutting down)."""
        return not self._closing and self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the scheduler thread."""
        self._thread = threading.Thread(target=self._loop, name="llmrun-serve-scheduler", daemon=True)
        self._thread.start()

    def stop(self, grace_s: float) -> None:
        """Take no new requests, let the rows in flight finish for up to ``grace_s``, fail the rest (503)."""
        with self._cond:
            self._closing = True
            end = time.monotonic() + grace_s
            while (self._waiting or self._running) and (left := end - time.monotonic()) > 0:
                self._cond.wait(min(left, 0.1))
            self._stopped = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=30)
        gone = ServeError(
            503, "the server shut down before this request finished; retry", code="shutting_down"
        )
        with self._cond:
            for t in [*self._waiting, *self._running]:
                t.row.cancel()
                t.send("error", gone)
            self._waiting.clear()
            self._running.clear()
        self._batch.close()

    # ------------------------------------------------------------------ scheduler thread
    def _retry_after(self) -> int:
        """Seconds until room is likely: a rough guess from the queue and the step time."""
        per_row_steps = 64
        rounds = max(1, len(self._waiting) // max(1, self.max_batch_size))
        return max(1, min(60, round(rounds * per_row_steps * self._step_s)))

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not (self._waiting or self._running) and not self._stopped:
                    self._cond.wait(1.0)
                    self.metrics.add_tokens(0)
                if self._stopped:
                    return
                self._expire(time.monotonic())
                self._admit()
                before = sum(len(t.row.tokens) for t in self._running)
            if self._batch.busy:
                started = time.monotonic()
                try:
                    self._batch.step()
                except Exception as exc:  # a failed step must not take the server down with it
                    log.exception("a decode step failed; failing the rows in the batch")
                    self._fail_running(ServeError(500, f"generation failed: {exc}", code="server_error"))
                    continue
                self._step_s = 0.8 * self._step_s + 0.2 * (time.monotonic() - started)
            with self._cond:
                self.metrics.add_tokens(sum(len(t.row.tokens) for t in self._running) - before)
                self._deliver()

    def _expire(self, now: float) -> None:
        """Cancel rows past their deadline and tell their requests (504)."""
        for t in [*self._waiting, *self._running]:
            if now > t.deadline and not t.closed:
                t.row.cancel()
                t.send("error", ServeError(504, "the request ran past the server's timeout", code="timeout"))
                self.metrics.cancelled.labels("timeout").inc()
        self._waiting = deque(t for t in self._waiting if not t.closed)

    def _admit(self) -> None:
        """Move waiting rows into the batch while it has room."""
        while self._waiting and len(self._running) < self.max_batch_size:
            t = self._waiting.popleft()
            self._batch.admit(t.row)
            self._running.append(t)
            self.metrics.prompt_tokens.inc(len(t.row.prompt_ids))
        self.metrics.queue_depth.set(len(self._waiting))
        self.metrics.running.set(len(self._running))

    def _deliver(self) -> None:
        """Send deltas and completions; drop rows that ended or were cancelled."""
        still: list[Ticket] = []
        for t in self._running:
            row = t.row
            if t.closed or row.cancelled:
                continue
            if t.stream:
                piece = row.text_delta()
                if piece:
                    t.send("delta", piece)
            if row.completion is not None:
                t.send("done", row.completion)
            else:
                still.append(t)
        self._running = still
        self.metrics.running.set(len(still))
        self._cond.notify_all()

    def _fail_running(self, error: ServeError) -> None:
        with self._cond:
            for t in self._running:
                t.row.cancel()
                t.send("error", error)
            self._running = []
            self._batch.close()
            self._batch = self.engine.batch()


def completion_of(event: Event) -> Completion:
    """The completion a ``done`` event carries (raises the error an ``error`` event carries)."""
    if event.kind == "error":
        raise event.payload
    payload: Completion = event.payload
    return payload
