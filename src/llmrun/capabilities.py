"""What a backend can do, as data (:class:`Capabilities`), and the one check of a request against it.

Each runner class declares ``capabilities``; :class:`~llmrun.runner.ModelRunner` checks every
call against them before any work: sampling options the backend cannot honour, output types
with field kinds it cannot produce, streaming. The conformance suite reads the same data.
"""

from __future__ import annotations

import enum
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, get_args, get_origin

from llmrun.errors import UnsupportedFeatureError
from llmrun.generation import GenerationConfig
from llmrun.schema import Type

__all__ = ["FIELD_KINDS", "SAMPLING_OPTIONS", "Capabilities", "field_kinds"]

#: Every generation option a backend may honour besides ``max_new_tokens``.
SAMPLING_OPTIONS: frozenset[str] = frozenset(
    {"temperature", "top_p", "top_k", "repetition_penalty", "stop", "seed"}
)
#: Every kind of ``Type`` field: the scalars, ``optional`` (``X | None``), ``list``,
#: ``literal``, ``enum`` and ``nested`` (a ``Type`` inside a ``Type``).
FIELD_KINDS: frozenset[str] = frozenset(
    {"str", "int", "float", "bool", "optional", "list", "literal", "enum", "nested"}
)


@dataclass(frozen=True)
class Capabilities:
    """What a runner class can do, declared as data and checked in one place.

    ``streams``: yields text as it is generated (else :meth:`~llmrun.runner.ModelRunner.stream`
    raises). ``trains``: fine-tunes. ``sampling``: the generation options (besides
    ``max_new_tokens``) it honours; a request that sets another one away from its default is
    refused before any work. ``field_kinds``: the kinds of ``Type`` fields (:data:`FIELD_KINDS`)
    its typed output can hold.
    """

    streams: bool = False
    trains: bool = False
    sampling: frozenset[str] = SAMPLING_OPTIONS
    field_kinds: frozenset[str] = FIELD_KINDS

    def check(self, who: str, config: GenerationConfig, output_type: type[Type] | None) -> None:
        """Raise :class:`~llmrun.errors.UnsupportedFeatureError` for what ``who`` cannot honour."""
        defaults = GenerationConfig()
        for name in sorted(SAMPLING_OPTIONS - self.sampling):
            value, default = getattr(config, name), getattr(defaults, name)
            if value != default:
                raise UnsupportedFeatureError(
                    f"{name}={value!r} cannot be honoured: {who} has no {name} setting. "
                    f"Leave {name} at its default ({default!r}), or use a backend that has it "
                    f"(this one honours: {', '.join(sorted(self.sampling)) or 'none'})"
                )
        if output_type is None:
            return
        for kind, field in field_kinds(output_type).items():
            if kind not in self.field_kinds:
                article = "an" if kind[0] in "aeiou" else "a"
                raise UnsupportedFeatureError(
                    f"{output_type.__name__}.{field} is {article} {kind} field, which {who} cannot produce "
                    f"(its typed output holds {', '.join(sorted(self.field_kinds))} fields). "
                    "Change the field, or use the local backend, which supports every field kind"
                )


def field_kinds(output_type: type[Type]) -> dict[str, str]:
    """The field kinds ``output_type`` uses, each with the first field (a dotted path) using it."""
    found: dict[str, str] = {}
    _walk(output_type, "", found)
    return found


def _walk(cls: type[Type], prefix: str, found: dict[str, str]) -> None:
    for name, info in cls.model_fields.items():
        _kinds(info.annotation, prefix + name, found)


def _kinds(annotation: Any, path: str, found: dict[str, str]) -> None:
    origin = get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        found.setdefault("optional", path)
        for arg in get_args(annotation):
            if arg is not type(None):
                _kinds(arg, path, found)
    elif origin is list:
        found.setdefault("list", path)
        _kinds(get_args(annotation)[0], path, found)
    elif origin is Literal:
        found.setdefault("literal", path)
    elif isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        found.setdefault("enum", path)
    elif isinstance(annotation, type) and issubclass(annotation, Type):
        found.setdefault("nested", path)
        _walk(annotation, path + ".", found)
    elif isinstance(annotation, type) and annotation.__name__ in ("str", "int", "float", "bool"):
        found.setdefault(annotation.__name__, path)
