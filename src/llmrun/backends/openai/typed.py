"""Typed output and sampling on an OpenAI-wire server: the schema sent, each reply checked, re-asking.

The schema sent is the one the local backend's grammar uses, sized to the token
budget by :func:`~llmrun.backends.local.schema_bounds.bound_schema` (pure Python: no
torch). The local decoder caps a plain string in tokens; a remote server cannot be
told that, so each plain string also gets ``maxLength = T // 4`` characters (a
character is at most 4 tokens: the worst case the budget was sized for), and an
enforcing server's JSON always closes within ``max_new_tokens``.

Every reply is validated. Where the profile does not enforce the schema, a reply
that fails is asked again with the validation error fed back (chat: as the next user
message after the bad reply; completions: appended to the prompt), up to
``validation_retries`` times.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from llmrun.backends.local.schema_bounds import TOKENS_PER_CHAR, bound_schema
from llmrun.backends.openai.profiles import ServerProfile, schema_fields
from llmrun.errors import IncompleteOutputError, OutputValidationError, UnsupportedFeatureError
from llmrun.generation import GenerationConfig
from llmrun.runner import OutputSpec

__all__ = ["Conversation", "TypedAsk", "bounded_schema", "sampling_fields"]

_FENCE = re.compile(r"^\s*```(?:json)?\s*\n?(.*?)\n?\s*```\s*$", re.DOTALL)


def bounded_schema(json_schema: dict[str, Any], max_new_tokens: int) -> dict[str, Any]:
    """``json_schema`` sized to ``max_new_tokens`` for a remote server (see the module docstring)."""
    bounded = bound_schema(json_schema, max_new_tokens)
    schema = bounded.schema
    _cap_strings(schema, max(bounded.string_tokens // TOKENS_PER_CHAR, 0))
    return schema


def _cap_strings(node: Any, chars: int) -> None:
    if isinstance(node, list):
        for item in node:
            _cap_strings(item, chars)
        return
    if not isinstance(node, dict):
        return
    kind = node.get("type")
    kinds = {kind} if isinstance(kind, str) else set(kind) if isinstance(kind, list) else set()
    plain = not ({"enum", "const", "pattern"} & node.keys())
    if "string" in kinds and plain:
        floor = int(node.get("minLength", 0))
        node["maxLength"] = max(floor, min(chars, int(node.get("maxLength", chars))))
    for key, value in node.items():
        if key in ("properties", "$defs", "definitions") and isinstance(value, dict):
            for sub in value.values():
                _cap_strings(sub, chars)
        elif key in ("items", "anyOf", "oneOf", "allOf", "prefixItems", "additionalProperties"):
            _cap_strings(value, chars)


def sampling_fields(profile: ServerProfile, config: GenerationConfig) -> dict[str, Any]:
    """The request fields for ``config``'s sampling settings under ``profile``'s names.

    ``temperature`` is always sent (llmrun's default 0 is greedy; servers default to
    1). A setting the profile does not accept, changed from its default, raises
    :class:`UnsupportedFeatureError` before any request.
    """
    defaults = GenerationConfig()
    values: dict[str, Any] = {
        "temperature": config.temperature,
        "top_p": config.top_p,
        "top_k": config.top_k,
        "repetition_penalty": config.repetition_penalty,
        "stop": list(config.stop),
        "seed": config.seed,
    }
    default_values: dict[str, Any] = {
        "top_p": defaults.top_p,
        "top_k": defaults.top_k,
        "repetition_penalty": defaults.repetition_penalty,
        "stop": [],
        "seed": defaults.seed,
    }
    fields: dict[str, Any] = {}
    for name, value in values.items():
        is_default = name in default_values and value == default_values[name]
        if is_default:
            continue
        wire_name = profile.sampling.get(name)
        if wire_name is None:
            raise UnsupportedFeatureError(
                f"{name}={value!r} cannot be honoured: profile {profile.name!r} sends no {name} "
                f"(it takes {', '.join(profile.sampling)}). Leave {name} at its default "
                f"({default_values.get(name)!r}), or choose the profile of your server (profile='vllm', ...)"
            )
        fields[wire_name] = value
    return fields


@dataclass(frozen=True)
class TypedAsk:
    """How one typed request asks for its schema: the endpoint, the body fields, who enforces it."""

    chat: bool
    fields: dict[str, Any]
    output: OutputSpec
    enforced: bool
    profile: str

    @classmethod
    def build(
        cls, profile: ServerProfile, chat: bool, schema: dict[str, Any], output: OutputSpec
    ) -> TypedAsk:
        use_chat = chat or profile.completions_schema is None
        if profile.schema_shape(use_chat) is None:
            raise UnsupportedFeatureError(
                f"profile {profile.name!r} has no way to ask for a JSON schema; "
                "use chat=True or another profile"
            )
        fields = schema_fields(profile, use_chat, schema, output.name)
        return cls(use_chat, fields, output, profile.enforces_schema, profile.name)

    def conversation(self, prompt: str) -> Conversation:
        return Conversation(self, [{"role": "user", "content": prompt}] if self.chat else prompt)


@dataclass
class Conversation:
    """One typed prompt's exchange with the server: what to send next, and each reply checked."""

    ask: TypedAsk
    current: str | list[dict[str, str]]
    rounds: int = field(default=0)

    def check(self, text: str, finish_reason: str | None, *, last: bool) -> str | None:
        """The reply's JSON text when it validates; None when it is to be asked again; else raise."""
        self.rounds += 1
        candidate = strip_fences(text)
        try:
            self.ask.output.parse(candidate)
        except OutputValidationError as bad:
            if self.ask.enforced and finish_reason == "length":
                raise IncompleteOutputError(
                    f"the server ran out of tokens before the {self.ask.output.name} JSON was "
                    "complete; raise max_new_tokens",
                    text,
                ) from None
            if self.ask.enforced or last:
                if self.rounds > 1:
                    bad.args = (f"{bad.args[0]} (after asking {self.rounds} times with the errors fed back)",)
                elif self.ask.enforced:
                    bad.args = (
                        f"{bad.args[0]} (profile {self.ask.profile!r} is meant to enforce the schema)",
                    )
                raise
            self._feed_back(text, str(bad))
            return None
        return candidate

    def _feed_back(self, text: str, error: str) -> None:
        note = (
            f"That reply is not valid: {error}. Answer again with only one JSON object that follows the "
            f"{self.ask.output.name} schema."
        )
        if isinstance(self.current, list):
            self.current = [
                *self.current,
                {"role": "assistant", "content": text},
                {"role": "user", "content": note},
            ]
        else:
            self.current = f"{self.current}{text}\n\n{note}\n"


def strip_fences(text: str) -> str:
    """``text`` without a Markdown code fence around it (servers that do not enforce add them)."""
    match = _FENCE.match(text)
    return match.group(1) if match else text
