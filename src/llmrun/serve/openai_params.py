"""Reading OpenAI request bodies: sampling values, ``response_format``, prompts; each bad value a 400.

Defaults follow OpenAI's: ``temperature=1``, ``top_p=1``, ``n=1``; ``max_tokens`` defaults to 16
on ``/v1/completions`` (to llmrun's 256 for a JSON answer) and to llmrun's budget (128 text, 256
JSON) on chat. ``top_k`` and ``repetition_penalty`` are taken as extra fields (vLLM's names). Values are never
coerced from strings. Options llmrun cannot honour (logprobs, tools, penalties, ...) are refused
with a 400 naming them rather than silently ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llmrun.checks import is_int
from llmrun.errors import InvalidInputError, SchemaError
from llmrun.generation import GenerationConfig
from llmrun.runner import OutputSpec
from llmrun.serve.errors import ServeError, bad_request

#: The most choices (``n``) one request may ask for.
MAX_N = 16
#: Completions' default ``max_tokens`` (OpenAI's).
COMPLETIONS_DEFAULT_MAX_TOKENS = 16


@dataclass(frozen=True)
class Sampling:
    """The generation settings of one OpenAI request."""

    config: GenerationConfig
    n: int
    stream: bool
    include_usage: bool


def sampling(body: dict[str, Any], *, chat: bool, typed: bool = False, max_n: int = MAX_N) -> Sampling:
    """Sampling settings of a completions (``chat=False``) or chat request (``typed``: a JSON answer)."""
    _refuse_unsupported(body)
    max_tokens = _int(body, "max_completion_tokens", 1) if chat else None
    if max_tokens is None:
        max_tokens = _int(body, "max_tokens", 1)
    if max_tokens is None and not chat and not typed:
        max_tokens = COMPLETIONS_DEFAULT_MAX_TOKENS
    temperature = _number(body, "temperature", 0.0, 2.0, default=1.0)
    top_p = _number(body, "top_p", 0.0, 1.0, default=1.0)
    if top_p == 0.0:
        raise bad_request("top_p=0 is invalid: it must be in (0, 1]; 1 turns nucleus sampling off", "top_p")
    n = _int(body, "n", 1, max_n) or 1
    seed = _int(body, "seed", None)
    # extra fields beyond OpenAI's, with vLLM's names (llmrun's openai backend sends them)
    top_k = _int(body, "top_k", 1)
    penalty = _number(body, "repetition_penalty", 0.01, 100.0, default=1.0)
    stream = _bool(body, "stream")
    options = body.get("stream_options")
    include_usage = False
    if options is not None:
        if not isinstance(options, dict):
            raise bad_request(
                'stream_options must be an object such as {"include_usage": true}', "stream_options"
            )
        include_usage = _bool(options, "include_usage")
    try:
        config = GenerationConfig(
            max_new_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            repetition_penalty=penalty,
            stop=_stop(body),
            seed=seed,
        )
    except InvalidInputError as exc:
        raise bad_request(str(exc)) from None
    return Sampling(config, n, stream, include_usage)


def response_format(body: dict[str, Any]) -> OutputSpec | None:
    """The output spec of ``response_format``: ``json_schema`` or ``json_object``; None for text."""
    raw = body.get("response_format")
    if raw is None:
        return None
    kind = raw.get("type") if isinstance(raw, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return OutputSpec.for_schema({"type": "object"}, name="json_object")
    if kind == "json_schema":
        spec = raw.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
            raise bad_request(
                'response_format json_schema needs {"json_schema": {"name": ..., "schema": {...}}}',
                "response_format.json_schema",
            )
        name = spec.get("name", "output")
        if not isinstance(name, str) or not name:
            raise bad_request(
                "response_format.json_schema.name must be a non-empty string", "response_format"
            )
        try:
            return OutputSpec.for_schema(spec["schema"], name=name)
        except SchemaError as exc:
            raise ServeError(
                400, str(exc), param="response_format.json_schema.schema", code="invalid_schema"
            ) from None
    raise bad_request(
        f"response_format type {kind!r} is not supported; use text, json_object or json_schema",
        "response_format",
    )


def completion_prompts(body: dict[str, Any]) -> list[str | list[int]]:
    """``prompt``: a string, a list of strings, a list of token ids, or a list of such lists."""
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt:
        if all(isinstance(p, str) for p in prompt):
            return list(prompt)
        if all(is_int(t) for t in prompt):
            return [list(prompt)]
        if all(isinstance(p, list) and p and all(is_int(t) for t in p) for p in prompt):
            return [list(p) for p in prompt]
    raise bad_request(
        "prompt must be a string, a non-empty list of strings, or token ids (a list of integers, or lists)",
        "prompt",
    )


def _refuse_unsupported(body: dict[str, Any]) -> None:
    harmless: dict[str, tuple[Any, ...]] = {  # the values of each option that ask for nothing
        "logprobs": (None, False, 0),
        "top_logprobs": (None, 0),
        "echo": (None, False),
        "suffix": (None, ""),
        "logit_bias": (None, {}),
        "presence_penalty": (None, 0),
        "frequency_penalty": (None, 0),
        "tools": (None, []),
        "functions": (None, []),
        "tool_choice": (None, "none"),
        "audio": (None,),
    }
    for name, allowed in harmless.items():
        if name in body and not _asks_nothing(body[name], allowed):
            raise bad_request(f"{name} is not supported by llmrun serve; leave it out", name)
    best_of = body.get("best_of")
    if best_of is not None and best_of != body.get("n", 1):
        raise bad_request(
            "best_of is not supported by llmrun serve; leave it out or set it equal to n", "best_of"
        )


def _asks_nothing(value: object, allowed: tuple[Any, ...]) -> bool:
    """``value`` is one of ``allowed`` (``0.0`` counting as ``0``; ``False`` never as ``0``)."""
    kind = int if isinstance(value, float) and value == 0 else type(value)
    return any(value == a and kind is type(a) for a in allowed)


def _int(body: dict[str, Any], name: str, lo: int | None, hi: int | None = None) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not is_int(value) or (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = f" in {lo}..{hi}" if hi is not None else f" >= {lo}" if lo is not None else ""
        raise bad_request(f"{name}={value!r} is invalid: it must be an integer{bounds}", name)
    return int(value)


def _number(body: dict[str, Any], name: str, lo: float, hi: float, *, default: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, int | float) or isinstance(value, bool) or not lo <= value <= hi:
        raise bad_request(f"{name}={value!r} is invalid: it must be a number in [{lo:g}, {hi:g}]", name)
    return float(value)


def _bool(body: dict[str, Any], name: str) -> bool:
    value = body.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise bad_request(f"{name}={value!r} is invalid: it must be true or false", name)
    return value


def _stop(body: dict[str, Any]) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or len(stop) > 4 or not all(isinstance(s, str) and s for s in stop):
        raise bad_request("stop must be a non-empty string or a list of at most 4 of them", "stop")
    return tuple(stop)
