"""The OpenAI wire: ``GET /v1/models``, ``POST /v1/completions``, ``POST /v1/chat/completions``.

Responses have OpenAI's shapes (``id``, ``object``, ``created``, ``model``, ``choices`` with
``finish_reason``, ``usage``); ``stream: true`` answers server-sent events ending in
``data: [DONE]``. ``response_format`` ``json_schema`` / ``json_object`` is grammar-constrained.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from llmrun.runner import Completion
from llmrun.serve import openai_params as params
from llmrun.serve.chat import check_messages, render_chat
from llmrun.serve.handling import RowSpec, check_model, prepare, run_rows, stream_events
from llmrun.serve.state import ServerState

ChunkOf = Callable[[int, str | None, str | None], dict[str, Any]]


def models(state: ServerState) -> JSONResponse:
    """``GET /v1/models``: the one served model."""
    model = {"id": state.model_name, "object": "model", "created": state.created, "owned_by": "llmrun"}
    return JSONResponse({"object": "list", "data": [model]})


async def completions(state: ServerState, request: Request, body: dict[str, Any]) -> Response:
    """``POST /v1/completions`` (OpenAI's legacy text completions)."""
    check_model(body.get("model"), state.model_name, "model")
    sampling = params.sampling(body, chat=False)
    prompts = params.completion_prompts(body)
    specs = [RowSpec(p, sampling.config) for p in prompts for _ in range(sampling.n)]
    head = _head("cmpl", "text_completion", state)

    def choice(i: int, text: str | None, finish: str | None) -> dict[str, Any]:
        return {"index": i, "text": text or "", "logprobs": None, "finish_reason": finish}

    if sampling.stream:
        return await _stream(state, request, specs, head, choice, sampling.include_usage, sampling.n, None)
    done = await run_rows(request, state.scheduler, specs, state.settings.timeout_s)
    choices = [choice(i, c.text, c.finish_reason) for i, c in enumerate(done)]
    return JSONResponse({**head, "choices": choices, "usage": _usage(done, sampling.n)})


async def chat_completions(state: ServerState, request: Request, body: dict[str, Any]) -> Response:
    """``POST /v1/chat/completions``: messages through the chat template, typed with ``response_format``."""
    check_model(body.get("model"), state.model_name, "model")
    sampling = params.sampling(body, chat=True)
    output = params.response_format(body)
    messages = check_messages(body.get("messages"))
    prompt = render_chat(state.engine.tokenizer, messages, llama2=state.llama2_chat, model=state.model_name)
    specs = [RowSpec(prompt, sampling.config, output) for _ in range(sampling.n)]
    head = _head("chatcmpl", "chat.completion.chunk" if sampling.stream else "chat.completion", state)

    def delta(i: int, text: str | None, finish: str | None) -> dict[str, Any]:
        piece = {} if text is None else {"content": text}
        return {"index": i, "delta": piece, "logprobs": None, "finish_reason": finish}

    if sampling.stream:
        role = {"role": "assistant", "content": ""}
        return await _stream(state, request, specs, head, delta, sampling.include_usage, sampling.n, role)
    done = await run_rows(request, state.scheduler, specs, state.settings.timeout_s)
    choices = [
        {
            "index": i,
            "message": {"role": "assistant", "content": c.text, "refusal": None},
            "logprobs": None,
            "finish_reason": c.finish_reason,
        }
        for i, c in enumerate(done)
    ]
    return JSONResponse({**head, "choices": choices, "usage": _usage(done, sampling.n)})


async def _stream(
    state: ServerState,
    request: Request,
    specs: list[RowSpec],
    head: dict[str, Any],
    choice: ChunkOf,
    include_usage: bool,
    n: int,
    role: dict[str, str] | None,
) -> Response:
    """Check and queue the rows now (so errors keep their status), then stream their events as SSE."""
    rows = await prepare(state.scheduler, specs)
    tickets = state.scheduler.submit(rows, stream=True, timeout_s=state.settings.timeout_s)

    async def body() -> AsyncIterator[str]:
        done: dict[int, Completion] = {}
        if role is not None:
            for i in range(len(specs)):
                yield _sse(
                    {
                        **head,
                        "choices": [{"index": i, "delta": role, "logprobs": None, "finish_reason": None}],
                    }
                )
        async for event in stream_events(request, state.scheduler, tickets):
            if event.kind == "error":
                _, error = event.payload.for_wire("openai")
                yield _sse(error)
                return
            if event.kind == "delta":
                yield _sse({**head, "choices": [choice(event.index, event.payload, None)]})
            else:
                done[event.index] = event.payload
                yield _sse({**head, "choices": [choice(event.index, None, event.payload.finish_reason)]})
        if len(done) < len(specs):
            return  # the client went away
        if include_usage:
            yield _sse({**head, "choices": [], "usage": _usage([done[i] for i in sorted(done)], n)})
        yield "data: [DONE]\n\n"

    return StreamingResponse(body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def _head(prefix: str, kind: str, state: ServerState) -> dict[str, Any]:
    return {
        "id": f"{prefix}-{uuid.uuid4().hex}",
        "object": kind,
        "created": int(time.time()),
        "model": state.model_name,
        "system_fingerprint": None,
    }


def _usage(done: list[Completion], n: int) -> dict[str, int]:
    """Prompt tokens once per prompt (not per choice), completion tokens of every choice."""
    prompt = sum(c.usage.prompt_tokens or 0 for c in done[::n])
    completion = sum(c.usage.completion_tokens or 0 for c in done)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"
