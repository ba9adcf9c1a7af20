"""What every route shares: reading a bounded JSON body, error responses, and running rows to the end.

:func:`run_rows` prepares a request's rows on worker threads, submits them to the scheduler and
waits for their completions; if the client disconnects first, the rows are cancelled.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse

from llmrun.backends.local.stepping import Row
from llmrun.errors import LLMRunError
from llmrun.generation import GenerationConfig
from llmrun.runner import Completion, OutputSpec
from llmrun.serve.errors import ServeError, Wire, bad_request, from_llmrun
from llmrun.serve.scheduler import Event, Scheduler, Ticket, completion_of


@dataclass(frozen=True)
class RowSpec:
    """One row to run: a prompt (text or token ids) and how to generate it."""

    prompt: str | list[int]
    config: GenerationConfig
    output: OutputSpec | None = None


async def read_json(request: Request, max_bytes: int) -> Any:
    """The request's JSON body: 413 past ``max_bytes``, 400 when it is not JSON."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise ServeError(413, f"the request body is {declared} bytes; the limit is {max_bytes}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise ServeError(413, f"the request body is over the limit of {max_bytes} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise bad_request("the request has no body; send a JSON object")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad_request(f"the request body is not valid JSON: {exc}") from None


def error_response(error: ServeError, wire: Wire) -> JSONResponse:
    """The JSON response of ``error`` on ``wire``."""
    status, body = error.for_wire(wire)
    return JSONResponse(body, status_code=status, headers=error.headers)


def check_model(requested: object, served: str, param: str) -> None:
    """404 (Lamini: 594) unless ``requested`` names the served model."""
    if requested != served:
        raise ServeError(
            404,
            f"model {requested!r} is not served here; this server serves {served!r}",
            code="model_not_found",
            param=param,
        )


async def prepare(scheduler: Scheduler, specs: Sequence[RowSpec]) -> list[Row]:
    """Check the rows and build their grammars off the event loop (llmrun errors become 4xx)."""

    def build() -> list[Row]:
        return [scheduler.prepare(s.prompt, s.config, s.output) for s in specs]

    try:
        return await anyio.to_thread.run_sync(build)
    except LLMRunError as exc:
        raise from_llmrun(exc) from None


async def run_rows(
    request: Request, scheduler: Scheduler, specs: Sequence[RowSpec], timeout_s: float
) -> list[Completion]:
    """Run the rows to their completions, in order; cancel them if the client goes away."""
    rows = await prepare(scheduler, specs)
    tickets = scheduler.submit(rows, stream=False, timeout_s=timeout_s)
    collect = asyncio.ensure_future(_collect(tickets))
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({collect, gone}, return_when=asyncio.FIRST_COMPLETED)
        if not collect.done():
            scheduler.cancel(tickets, "disconnect")
            raise ServeError(499, "the client closed the connection", code="client_closed")
        return collect.result()
    finally:
        why = "disconnect" if gone.done() and not gone.cancelled() else "abandoned"
        gone.cancel()
        if not collect.done():
            collect.cancel()
        scheduler.cancel(tickets, why)


async def _collect(tickets: list[Ticket]) -> list[Completion]:
    done: dict[int, Completion] = {}
    events = tickets[0].events
    while len(done) < len(tickets):
        event = await events.get()
        done[event.index] = completion_of(event)
    return [done[i] for i in range(len(tickets))]


async def _disconnected(request: Request) -> None:
    """Return when the client disconnects (the body has been read, so only that message is left)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def stream_events(
    request: Request, scheduler: Scheduler, tickets: list[Ticket]
) -> AsyncIterator[Event]:
    """The events of streaming rows as they come; stops (cancelling the rows) if the client goes away."""
    events = tickets[0].events
    gone = asyncio.ensure_future(_disconnected(request))
    open_rows = len(tickets)
    try:
        while open_rows:
            get = asyncio.ensure_future(events.get())
            await asyncio.wait({get, gone}, return_when=asyncio.FIRST_COMPLETED)
            if not get.done():
                get.cancel()
                scheduler.cancel(tickets, "disconnect")
                return
            event = get.result()
            if event.kind != "delta":
                open_rows -= 1
            yield event
            if event.kind == "error":
                return
    finally:
        why = "disconnect" if gone.done() and not gone.cancelled() else "abandoned"
        gone.cancel()
        scheduler.cancel(tickets, why)
