"""Generation settings shared by every backend."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from llmrun.checks import is_finite_number, is_int
from llmrun.errors import InvalidInputError

#: Token budget of an untyped call when ``max_new_tokens`` is not set.
DEFAULT_MAX_NEW_TOKENS = 128
#: Token budget of a typed call when ``max_new_tokens`` is not set: room for a
#: JSON object with several fields, so truncated objects are rare.
DEFAULT_TYPED_MAX_NEW_TOKENS = 256
#: Most validation retries a call may ask for: each one is a whole new completion.
MAX_RETRIES = 10


@dataclass(frozen=True)
class GenerationConfig:
    """How text is generated. Validated on construction.

    ``temperature == 0`` (the default) means greedy decoding, which is
    deterministic. ``top_k=None`` and ``top_p=1.0`` turn those filters off.
    ``stop`` sequences end generation; the returned text stops before them.
    ``max_new_tokens=None`` picks :data:`DEFAULT_MAX_NEW_TOKENS` for text and
    :data:`DEFAULT_TYPED_MAX_NEW_TOKENS` for typed calls. ``retries``: how many
    times a typed call whose output fails validation (a pydantic validator, a
    bound) is asked again with the validation error in the prompt, before
    :class:`~llmrun.errors.OutputValidationError` (see :mod:`llmrun.retries`).
    """

    max_new_tokens: int | None = None
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int | None = None
    repetition_penalty: float = 1.0
    stop: tuple[str, ...] = field(default_factory=tuple)
    seed: int | None = None
    retries: int = 0

    def __post_init__(self) -> None:
        stop = self.stop
        if isinstance(stop, str):
            object.__setattr__(self, "stop", (stop,))
        elif isinstance(stop, list | tuple):
            object.__setattr__(self, "stop", tuple(stop))
        else:  # a number, bytes, a dict...: not a sequence of strings
            raise InvalidInputError(f"stop={stop!r} is invalid: {_RULES['stop']}")
        _check(self)

    def merged(self, **overrides: Any) -> GenerationConfig:
        """Return a copy with ``overrides`` applied; ``None`` values are ignored.

        Unknown names raise :class:`~llmrun.errors.InvalidInputError`.
        """
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise InvalidInputError(
                f"unknown generation option(s) {', '.join(unknown)}; "
                f"known options are: {', '.join(sorted(known))}"
            )
        changes = {k: v for k, v in overrides.items() if v is not None}
        return dataclasses.replace(self, **changes) if changes else self

    def budget(self, typed: bool) -> int:
        """The token budget for a call: ``max_new_tokens`` or the default for its kind."""
        if self.max_new_tokens is not None:
            return self.max_new_tokens
        return DEFAULT_TYPED_MAX_NEW_TOKENS if typed else DEFAULT_MAX_NEW_TOKENS

    @property
    def greedy(self) -> bool:
        """True when decoding picks the most likely token at every step."""
        return self.temperature == 0.0


#: The most and least seeds torch's generators take.
SEED_MIN, SEED_MAX = -(2**63), 2**64 - 1

_RULES = {
    "max_new_tokens": "it must be a positive integer, e.g. 64",
    "temperature": "it must be a finite number >= 0 (0 means greedy decoding)",
    "top_p": "it must be a finite number in (0, 1]; 1.0 turns nucleus sampling off",
    "top_k": "it must be a positive integer, or unset to turn top-k off",
    "repetition_penalty": "it must be a finite number > 0 (1.0 means none)",
    "stop": "stop sequences must be non-empty strings (one string or a list of them)",
    "seed": "it must be an integer from -2**63 to 2**64 - 1, or unset",
    "retries": f"it must be an integer from 0 to {MAX_RETRIES} (0: no validation retries)",
}


def option_problem(name: str, value: object) -> str | None:
    """Why ``value`` is not a valid ``name`` (the rule it breaks), or None when it is valid.

    The CLI uses it to check its flags before loading a model.
    """
    if name == "stop":
        items = (value,) if isinstance(value, str) else value
        ok = isinstance(items, list | tuple) and all(isinstance(s, str) and s for s in items)
    elif name in ("max_new_tokens", "top_k"):
        ok = is_int(value) and value > 0
    elif name == "seed":
        ok = is_int(value) and SEED_MIN <= value <= SEED_MAX
    elif name == "temperature":
        ok = is_finite_number(value) and value >= 0
    elif name == "top_p":
        ok = is_finite_number(value) and 0 < value <= 1
    elif name == "repetition_penalty":
        ok = is_finite_number(value) and value > 0
    elif name == "retries":
        ok = is_int(value) and 0 <= value <= MAX_RETRIES
    else:
        return None
    return None if ok else _RULES[name]


def _check(cfg: GenerationConfig) -> None:
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if value is None and f.name in ("max_new_tokens", "top_k", "seed"):
            continue
        problem = option_problem(f.name, value)
        if problem:
            raise InvalidInputError(f"{f.name}={value!r} is invalid: {problem}")


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """``text`` up to the first occurrence of any of the ``stop`` sequences (all of it if none occurs)."""
    cut = min((i for s in stop if (i := text.find(s)) >= 0), default=len(text))
    return text[:cut]
