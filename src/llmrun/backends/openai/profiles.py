"""What each OpenAI-wire server needs, as data: one frozen :class:`ServerProfile` per server.

A profile says how the server is asked for JSON that follows a schema (on the chat
endpoint and on the completions endpoint; ``None`` where it cannot be asked there),
whether it enforces that schema while decoding (else llmrun validates each reply and
asks again with the error), which of llmrun's sampling settings it accepts and under
which names, which ``owned_by`` its ``/v1/models`` list shows (how ``profile="auto"``
recognises it), and where it listens by default.

Request shapes, as each server documents them:

* ``openai`` / ``generic`` / ``sglang`` chat / ``ollama`` chat: ``response_format =
  {"type": "json_schema", "json_schema": {"name", "schema", "strict"}}`` (Ollama turns
  it into its own ``format``; its ``/v1/completions`` takes no schema, so typed calls go
  to chat);
* ``vllm``: ``structured_outputs = {"json": schema}`` on both endpoints (vLLM 0.10.2+;
  ``guided_json`` before, removed in 0.12: profile ``vllm_legacy``, which ``auto`` picks
  when vLLM's ``GET /version`` says it is older);
* ``sglang`` completions: ``json_schema`` as a JSON string;
* ``llamacpp``: chat ``response_format = {"type": "json_object", "schema": schema}``,
  completions ``json_schema = schema``; ``repeat_penalty`` for repetition penalty;
* ``llmrun`` (``llmrun serve``): ``response_format`` json_schema, strict, on both endpoints.

What ``llmrun serve`` needs to do for profile ``llmrun`` (and ``auto``) to fit: list its
models in ``GET /v1/models`` with ``owned_by: "llmrun"``; take ``response_format =
{"type": "json_schema", "json_schema": {"name", "schema", "strict"}}`` on
``/v1/completions`` and ``/v1/chat/completions`` and constrain decoding to that schema
(the local engine's grammar); take ``top_k`` and ``repetition_penalty`` as extra body
fields; answer ``finish_reason: "length"`` when the budget ends the JSON.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from llmrun.errors import ConfigurationError

__all__ = [
    "KNOWN_HOSTS",
    "PROFILES",
    "SchemaShape",
    "ServerProfile",
    "get_profile",
    "profile_for_host",
    "profile_for_owner",
    "schema_fields",
]

#: How a schema goes into a request body.
SchemaShape = Literal[
    "response_format", "json_object", "structured_outputs", "guided_json", "json_schema", "json_schema_string"
]

#: llmrun sampling settings -> the wire names most servers use.
_OPENAI_SAMPLING = {"temperature": "temperature", "top_p": "top_p", "stop": "stop", "seed": "seed"}
_FULL_SAMPLING = {**_OPENAI_SAMPLING, "top_k": "top_k", "repetition_penalty": "repetition_penalty"}


def _frozen(mapping: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True)
class ServerProfile:
    """How one kind of OpenAI-wire server is spoken to. See the module docstring."""

    name: str
    description: str
    #: How a schema is asked for on ``/chat/completions``; None: it cannot be.
    chat_schema: SchemaShape | None
    #: How a schema is asked for on ``/completions``; None: typed calls use chat instead.
    completions_schema: SchemaShape | None
    #: True when the server constrains decoding to the schema (no re-asking on a bad reply).
    enforces_schema: bool
    #: llmrun sampling option -> wire name; options not here cannot be honoured.
    sampling: Mapping[str, str] = field(default_factory=lambda: _frozen(_OPENAI_SAMPLING))
    #: ``owned_by`` values of ``GET /v1/models`` that identify this server.
    owned_by: tuple[str, ...] = ()
    #: Where the server listens unless told otherwise (None: base_url must be given).
    default_base_url: str | None = None
    #: Environment variables read for the API key when none is given (only this profile's own).
    key_env: tuple[str, ...] = ()
    #: Ask for ``strict`` schema adherence in ``response_format`` (OpenAI's strict mode).
    strict: bool = False

    def schema_shape(self, chat: bool) -> SchemaShape | None:
        return self.chat_schema if chat else self.completions_schema


_PROFILE_LIST = (
    ServerProfile(
        "generic",
        "any OpenAI-compatible server: response_format json_schema on chat, replies validated and re-asked",
        chat_schema="response_format",
        completions_schema=None,
        enforces_schema=False,
    ),
    ServerProfile(
        "openai",
        "api.openai.com: response_format json_schema (non-strict: llmrun's bounded schemas use keywords "
        "strict mode refuses), replies validated and re-asked",
        chat_schema="response_format",
        completions_schema=None,
        enforces_schema=False,
        owned_by=("openai", "system", "openai-internal"),
        default_base_url="https://api.openai.com/v1",
        key_env=("OPENAI_API_KEY",),
    ),
    ServerProfile(
        "vllm",
        "vLLM 0.10.2+: structured_outputs {'json': schema} on both endpoints, enforced",
        chat_schema="structured_outputs",
        completions_schema="structured_outputs",
        enforces_schema=True,
        sampling=_frozen(_FULL_SAMPLING),
        owned_by=("vllm",),
        default_base_url="http://localhost:8000/v1",
    ),
    ServerProfile(
        "vllm_legacy",
        "vLLM before 0.12: guided_json on both endpoints, enforced",
        chat_schema="guided_json",
        completions_schema="guided_json",
        enforces_schema=True,
        sampling=_frozen(_FULL_SAMPLING),
        default_base_url="http://localhost:8000/v1",
    ),
    ServerProfile(
        "sglang",
        "SGLang: response_format json_schema on chat, json_schema (a JSON string) on completions, enforced",
        chat_schema="response_format",
        completions_schema="json_schema_string",
        enforces_schema=True,
        sampling=_frozen(_FULL_SAMPLING),
        owned_by=("sglang",),
        default_base_url="http://localhost:30000/v1",
    ),
    ServerProfile(
        "llamacpp",
        "llama.cpp llama-server: response_format {'type': 'json_object', 'schema': ...} on chat, "
        "json_schema on completions, enforced by its grammar",
        chat_schema="json_object",
        completions_schema="json_schema",
        enforces_schema=True,
        sampling=_frozen({**_FULL_SAMPLING, "repetition_penalty": "repeat_penalty"}),
        owned_by=("llamacpp",),
        default_base_url="http://localhost:8080/v1",
    ),
    ServerProfile(
        "ollama",
        "Ollama: response_format json_schema on chat (its format), enforced; its /v1/completions takes "
        "no schema, so typed calls use chat",
        chat_schema="response_format",
        completions_schema=None,
        enforces_schema=True,
        owned_by=("library", "ollama"),
        default_base_url="http://localhost:11434/v1",
    ),
    ServerProfile(
        "lamini_inf",
        "Lamini's OpenAI-compatible /inf endpoint: response_format json_schema on chat, replies validated "
        "and re-asked",
        chat_schema="response_format",
        completions_schema=None,
        enforces_schema=False,
        owned_by=("lamini",),
        default_base_url="https://api.lamini.ai/inf",
        key_env=("LAMINI_API_KEY",),
    ),
    ServerProfile(
        "llmrun",
        "llmrun serve: response_format json_schema (strict) on both endpoints, enforced by its grammar",
        chat_schema="response_format",
        completions_schema="response_format",
        enforces_schema=True,
        sampling=_frozen(_FULL_SAMPLING),
        owned_by=("llmrun",),
        default_base_url="http://127.0.0.1:8000/v1",
        strict=True,
    ),
)

#: Every profile by name.
PROFILES: Mapping[str, ServerProfile] = MappingProxyType({p.name: p for p in _PROFILE_LIST})


def get_profile(name: object) -> ServerProfile:
    """The profile called ``name``; anything else is a ConfigurationError listing the known ones."""
    if isinstance(name, str) and name in PROFILES:
        return PROFILES[name]
    raise ConfigurationError(
        f"openai option profile={name!r} is unknown; known profiles: auto, {', '.join(PROFILES)}"
    )


#: Hosted services known by their host name: ``profile="auto"`` needs no request for them.
KNOWN_HOSTS: Mapping[str, str] = MappingProxyType({"api.openai.com": "openai", "api.lamini.ai": "lamini_inf"})


def profile_for_host(host: str | None) -> ServerProfile | None:
    """The profile of a hosted service by its host name (``api.openai.com``...), if it is one."""
    name = KNOWN_HOSTS.get((host or "").lower())
    return PROFILES[name] if name else None


def profile_for_owner(owners: set[str]) -> ServerProfile | None:
    """The profile whose ``owned_by`` matches one of a ``/v1/models`` list's owners, if any."""
    lowered = {o.lower() for o in owners}
    return next((p for p in _PROFILE_LIST if lowered & set(p.owned_by)), None)


def _response_format(schema: dict[str, Any], name: str, strict: bool) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": name, "schema": schema}
    if strict:
        spec["strict"] = True
    return {"response_format": {"type": "json_schema", "json_schema": spec}}


_SHAPES: Mapping[SchemaShape, Callable[[dict[str, Any], str, bool], dict[str, Any]]] = {
    "response_format": _response_format,
    "json_object": lambda s, n, strict: {"response_format": {"type": "json_object", "schema": s}},
    "structured_outputs": lambda s, n, strict: {"structured_outputs": {"json": s}},
    "guided_json": lambda s, n, strict: {"guided_json": s},
    "json_schema": lambda s, n, strict: {"json_schema": s},
    "json_schema_string": lambda s, n, strict: {"json_schema": json.dumps(s)},
}


def schema_fields(profile: ServerProfile, chat: bool, schema: dict[str, Any], name: str) -> dict[str, Any]:
    """The request-body fields that ask ``profile``'s server for JSON following ``schema``."""
    shape = profile.schema_shape(chat)
    if shape is None:
        raise ConfigurationError(
            f"profile {profile.name!r} cannot ask for a schema on the {'chat' if chat else 'completions'} "
            "endpoint"
        )
    return _SHAPES[shape](schema, _wire_name(name), profile.strict)


def _wire_name(name: str) -> str:
    """A ``json_schema.name`` OpenAI accepts: letters, digits, ``_`` and ``-``, at most 64."""
    clean = "".join(c if c.isalnum() or c in "_-" else "_" for c in name)[:64]
    return clean or "output"
