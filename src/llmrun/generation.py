"""Generation settings shared by every backend."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

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
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        elif not isinstance(self.stop, tuple):
            object.__setattr__(self, "stop", tuple(self.stop))
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


def _check(cfg: GenerationConfig) -> None:
    def bad(name: str, value: object, rule: str) -> InvalidInputError:
        return InvalidInputError(f"{name}={value!r} is invalid: {rule}")

    n = cfg.max_new_tokens
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n <= 0):
        raise bad("max_new_tokens", n, "it must be a positive integer, e.g. max_new_tokens=64")
    if not _is_number(cfg.temperature) or cfg.temperature < 0:
        raise bad("temperature", cfg.temperature, "it must be a number >= 0 (0 means greedy decoding)")
    if not _is_number(cfg.top_p) or not 0 < cfg.top_p <= 1:
        raise bad("top_p", cfg.top_p, "it must be in (0, 1]; 1.0 turns nucleus sampling off")
    k = cfg.top_k
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k <= 0):
        raise bad("top_k", k, "it must be a positive integer, or None to turn top-k off")
    if not _is_number(cfg.repetition_penalty) or cfg.repetition_penalty <= 0:
        raise bad("repetition_penalty", cfg.repetition_penalty, "it must be a number > 0 (1.0 means none)")
    for s in cfg.stop:
        if not isinstance(s, str) or not s:
            raise bad("stop", cfg.stop, "stop sequences must be non-empty strings")
    seed = cfg.seed
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise bad("seed", seed, "it must be an integer or None")
    r = cfg.retries
    if isinstance(r, bool) or not isinstance(r, int) or not 0 <= r <= MAX_RETRIES:
        raise bad("retries", r, f"it must be an integer from 0 to {MAX_RETRIES} (0: no validation retries)")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """``text`` up to the first occurrence of any of the ``stop`` sequences (all of it if none occurs)."""
    cut = min((i for s in stop if (i := text.find(s)) >= 0), default=len(text))
    return text[:cut]
