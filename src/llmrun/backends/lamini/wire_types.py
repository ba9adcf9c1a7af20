"""Map an output :class:`~llmrun.Type` to Lamini's ``output_type`` and back.

Lamini's ``output_type`` is a flat ``{"field": "str"|"int"|"float"|"bool"}``.
The mapping:

* ``str``, ``int``, ``float``, ``bool`` go as themselves;
* ``Optional[X]`` goes as ``X`` (Lamini never answers ``null``, so the value is
  always present, which the Type accepts);
* a nested ``Type`` is flattened into dotted names, ``{"address.city": "str"}``,
  and the reply is folded back into ``{"address": {"city": ...}}``. Field names
  cannot contain dots, so this round-trips exactly;
* ``list``, ``dict``, ``Literal`` and ``Enum`` fields cannot be expressed, so a typed call
  with them fails *before* any request with :class:`UnsupportedFeatureError`,
  naming the field and what to change (the local backend supports them all).

Field constraints (``ge``, ``max_length``, ``pattern`` ...) are not sent; the
reply is validated against them, so a violation is an ``OutputValidationError``.
"""

from __future__ import annotations

import enum
import functools
import types
import typing
from typing import Any, Literal, get_args, get_origin

from llmrun.errors import UnsupportedFeatureError
from llmrun.schema import Type

_NAMES: dict[Any, str] = {str: "str", int: "int", float: "float", bool: "bool"}


@functools.cache
def lamini_output_type(output_type: type[Type]) -> dict[str, str]:
    """The flat Lamini ``output_type`` for ``output_type`` (cached; do not mutate)."""
    flat: dict[str, str] = {}
    _flatten(output_type, output_type.__name__, "", flat)
    return flat


def _flatten(cls: type[Type], root: str, prefix: str, out: dict[str, str]) -> None:
    for name, info in cls.model_fields.items():
        path = prefix + name
        annotation = _strip_optional(info.annotation)
        if annotation in _NAMES:
            out[path] = _NAMES[annotation]
        elif isinstance(annotation, type) and issubclass(annotation, Type):
            _flatten(annotation, root, path + ".", out)
        else:
            raise UnsupportedFeatureError(
                f"{root}.{path} is {_kind(annotation)}, which Lamini's output_type cannot express "
                "(it has only str, int, float and bool fields; nested Types are sent flattened). "
                "Change the field to str, int, float or bool (and check the value yourself), "
                "or use the local backend, which supports lists, Literal and Enum fields"
            )


def _strip_optional(annotation: Any) -> Any:
    if get_origin(annotation) in (typing.Union, types.UnionType):
        rest = [a for a in get_args(annotation) if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return annotation


def _kind(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is list or annotation is list:
        return "a list"
    if origin is dict or annotation is dict:
        return "a dict"
    if origin is Literal:
        return "a Literal"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return f"an Enum ({annotation.__name__})"
    return f"of type {annotation!r}"


def unflatten(reply: dict[str, Any]) -> dict[str, Any]:
    """Fold dotted keys back into nested objects: ``{"a.b": 1}`` -> ``{"a": {"b": 1}}``."""
    out: dict[str, Any] = {}
    for key, value in reply.items():
        parts = key.split(".")
        node = out
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):  # "a" and "a.b" both present: keep as sent, let validation say
                break
            node = child
        else:
            node[parts[-1]] = value
            continue
        out[key] = value
    return out
