"""The Lamini wire: ``POST /v1/completions`` as the ``lamini`` 3.4 client sends it.

The body's checks and shapes are the project's one description of the wire
(:mod:`llmrun.testing.lamini_wire`, which the fake Lamini server speaks too): ``model_name``,
``prompt`` (a string, or a list for a batch), ``output_type`` (``{"field": "str"|"int"|"float"|"bool"}``),
``max_tokens`` (prompt plus new tokens) and ``max_new_tokens``. Untyped answers are
``{"output": text}``; typed ones are the object, decoded under the output type's JSON grammar;
a list prompt gets a list. Errors are ``{"detail": ...}`` with the statuses the client maps
(400/422 ``UserError``, 401, 429, 503, 594 unknown model, 524 timeout).

Tuning (``/v1/train``, data uploads) is not served: those paths answer 501 and point at
``llmrun train`` on the server's machine.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from llmrun.__about__ import __version__
from llmrun.errors import LLMRunError
from llmrun.generation import GenerationConfig
from llmrun.runner import OutputSpec
from llmrun.serve.errors import ServeError, from_llmrun
from llmrun.serve.handling import RowSpec, check_model, run_rows
from llmrun.serve.state import ServerState
from llmrun.testing import lamini_wire as wire

_JSON_TYPES = {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}

TUNING_PATHS = (
    "/v1/train",
    "/v1/train/{rest:path}",
    "/v1/local-data",
    "/v1/existing-data",
    "/v1/data",
    "/v1/data/{rest:path}",
    "/v1/get-upload-base-path",
)


def output_schema(output_type: dict[str, str]) -> dict[str, Any]:
    """The JSON Schema of a Lamini ``output_type``: every field required, no others."""
    return {
        "type": "object",
        "properties": {name: {"type": _JSON_TYPES[t]} for name, t in output_type.items()},
        "required": list(output_type),
        "additionalProperties": False,
    }


async def completions(state: ServerState, request: Request, body: dict[str, Any]) -> JSONResponse:
    """Answer one Lamini completions request."""
    try:
        prompts, batched = wire.parse_prompts(body, max_batch=state.settings.max_queue)
        output_type = wire.parse_output_type(body.get("output_type"))
    except wire.WireError as exc:
        raise ServeError(exc.status, exc.detail) from None
    check_model(body["model_name"], state.model_name, "model_name")
    max_new = _positive(body, "max_new_tokens")
    max_total = _positive(body, "max_tokens")
    output = OutputSpec.for_schema(output_schema(output_type), name="output") if output_type else None
    specs = [RowSpec(p, _config(state, p, max_new, max_total)) for p in prompts]
    specs = [RowSpec(s.prompt, s.config, output) for s in specs]
    done = await run_rows(request, state.scheduler, specs, state.settings.timeout_s)
    answers: list[Any] = []
    for c in done:
        if output is None:
            answers.append({"output": c.text})
            continue
        try:
            answers.append(output.parse(c.text))
        except LLMRunError as exc:
            raise from_llmrun(exc) from None
    return JSONResponse(answers if batched else answers[0])


def version() -> JSONResponse:
    """``GET /v1/version``, which ``Lamini.version()`` reads."""
    return JSONResponse({"server_version": f"llmrun-serve {__version__}", "features": []})


def tuning_not_served() -> ServeError:
    """The 501 that tuning and data-upload paths answer."""
    return ServeError(
        501,
        "llmrun serve does not run tuning jobs; fine-tune on the server's machine with "
        "`llmrun train MODEL data.jsonl`, then serve the run folder",
        code="not_implemented",
    )


def _positive(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ServeError(400, f"{name}={value!r} is invalid: it must be a positive integer")
    return value


def _config(state: ServerState, prompt: str, max_new: int | None, max_total: int | None) -> GenerationConfig:
    """Greedy; ``max_new_tokens``, else what ``max_tokens`` (prompt + new) leaves after the prompt."""
    if max_new is None and max_total is not None:
        used = len(state.engine.tokenizer(prompt, add_special_tokens=True)["input_ids"])
        if max_total <= used:
            raise ServeError(
                400,
                f"max_tokens={max_total} leaves no room for new tokens after the prompt's {used} tokens; "
                "raise max_tokens or use max_new_tokens",
            )
        max_new = max_total - used
    return GenerationConfig(max_new_tokens=max_new)
