"""The ASGI app: both wires, ``/health`` and ``/metrics`` over one scheduler.

``POST /v1/completions`` is shared by the two wires: a body with ``model_name`` is Lamini's, one
with ``model`` is OpenAI's. Every handler runs inside :func:`_answer`, which turns
:class:`~llmrun.serve.errors.ServeError` into that wire's error body, counts the request and
its latency, and answers 500 (logged, never raised into the server) for anything unexpected.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from llmrun.backends.local.engine import LocalEngine
from llmrun.serve import lamini_routes, openai_routes
from llmrun.serve.auth import BearerAuth
from llmrun.serve.chat import is_llama2_chat
from llmrun.serve.errors import ServeError, Wire, bad_request
from llmrun.serve.handling import error_response, read_json
from llmrun.serve.metrics import CONTENT_TYPE_LATEST, Metrics
from llmrun.serve.scheduler import Scheduler
from llmrun.serve.settings import ServeSettings
from llmrun.serve.state import ServerState

__all__ = ["create_app"]

log = logging.getLogger("llmrun.serve")

Handler = Callable[[ServerState, Request], Awaitable[tuple[Wire, Response]]]


def create_app(engine: LocalEngine, settings: ServeSettings, model_name: str) -> Starlette:
    """An ASGI app serving ``engine`` as ``model_name`` (its scheduler runs while the app is up)."""
    metrics = Metrics()
    scheduler = Scheduler(
        engine, max_batch_size=settings.max_batch_size, max_queue=settings.max_queue, metrics=metrics
    )
    config = engine.model.config
    names = [model_name, str(getattr(config, "name_or_path", "") or "")]
    state = ServerState(
        engine=engine,
        scheduler=scheduler,
        settings=settings,
        metrics=metrics,
        model_name=model_name,
        llama2_chat=is_llama2_chat(names, getattr(config, "model_type", None)),
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        scheduler.start()
        log.info(
            "serving %s (max batch %d, queue %d)", model_name, settings.max_batch_size, settings.max_queue
        )
        try:
            yield
        finally:
            scheduler.stop(settings.shutdown_grace_s)

    routes = [
        Route("/health", _route(state, "health", _health), methods=["GET"]),
        Route("/metrics", _route(state, "metrics", _metrics), methods=["GET"]),
        Route("/v1/models", _route(state, "models", _models), methods=["GET"]),
        Route("/v1/version", _route(state, "version", _version), methods=["GET"]),
        Route("/v1/completions", _route(state, "completions", _completions), methods=["POST"]),
        Route("/v1/chat/completions", _route(state, "chat", _chat), methods=["POST"]),
        *[
            Route(path, _route(state, "tuning", _tuning), methods=["GET", "POST", "DELETE"])
            for path in lamini_routes.TUNING_PATHS
        ],
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[Middleware(BearerAuth, api_key=settings.api_key)],
        exception_handlers={HTTPException: _http_error},
    )
    app.state.llmrun = state
    return app


def _route(state: ServerState, name: str, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        return await _answer(state, name, handler, request)

    return endpoint


async def _answer(state: ServerState, name: str, handler: Handler, request: Request) -> Response:
    started = time.monotonic()
    wire: Wire = "any"
    try:
        wire, response = await handler(state, request)
    except ServeError as exc:
        wire = getattr(request.state, "wire", wire)
        response = error_response(exc, wire)
    except Exception:  # nothing a request does may take the server down
        log.exception("unexpected error answering %s %s", request.method, request.url.path)
        wire = getattr(request.state, "wire", wire)
        response = error_response(ServeError(500, "internal server error (logged on the server)"), wire)
    state.metrics.requests.labels(wire, name, str(response.status_code)).inc()
    if name not in ("health", "metrics"):
        state.metrics.latency.labels(wire, name).observe(time.monotonic() - started)
    return response


async def _body(state: ServerState, request: Request) -> dict[str, Any]:
    body = await read_json(request, state.settings.max_body_bytes)
    if not isinstance(body, dict):
        raise bad_request(f"the request body must be a JSON object, got {type(body).__name__}")
    return body


async def _completions(state: ServerState, request: Request) -> tuple[Wire, Response]:
    body = await _body(state, request)
    if "model_name" in body:
        request.state.wire = "lamini"
        return "lamini", await lamini_routes.completions(state, request, body)
    request.state.wire = "openai"
    return "openai", await openai_routes.completions(state, request, body)


async def _chat(state: ServerState, request: Request) -> tuple[Wire, Response]:
    request.state.wire = "openai"
    body = await _body(state, request)
    return "openai", await openai_routes.chat_completions(state, request, body)


async def _models(state: ServerState, request: Request) -> tuple[Wire, Response]:
    return "openai", openai_routes.models(state)


async def _version(state: ServerState, request: Request) -> tuple[Wire, Response]:
    return "lamini", lamini_routes.version()


async def _tuning(state: ServerState, request: Request) -> tuple[Wire, Response]:
    request.state.wire = "lamini"
    raise lamini_routes.tuning_not_served()


async def _health(state: ServerState, request: Request) -> tuple[Wire, Response]:
    waiting, running = state.scheduler.depth
    ok = state.scheduler.accepting
    body = {
        "status": "ok" if ok else "unavailable",
        "model": state.model_name,
        "waiting": waiting,
        "running": running,
    }
    return "any", JSONResponse(body, status_code=200 if ok else 503)


async def _metrics(state: ServerState, request: Request) -> tuple[Wire, Response]:
    waiting, running = state.scheduler.depth
    state.metrics.queue_depth.set(waiting)
    state.metrics.running.set(running)
    return "any", Response(state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


async def _http_error(request: Request, exc: Exception) -> Response:
    """404 and 405 as JSON bodies both clients read."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    detail = exc.detail if isinstance(exc, HTTPException) else "internal server error"
    if status == 404:
        detail = f"no route {request.method} {request.url.path}; the API is under /v1 (see /v1/models)"
    return error_response(ServeError(status, str(detail)), "any")
