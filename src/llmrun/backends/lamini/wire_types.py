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

A raw JSON Schema (``output_schema=``) maps the same way
(:func:`lamini_schema_output_type`): an object whose properties (after ``$ref``) are
``string``/``integer``/``number``/``boolean``, or nullable ones, or nested objects of
those; any other keyword that shapes a value (arrays, ``enum``, free keys, ``anyOf`` of
several types ...) is refused before any request, naming the property.
"""

from __future__ import annotations

import enum
import functools
import types
import typing
from typing import Any, Literal, get_args, get_origin

from llmrun.errors import UnsupportedFeatureError
from llmrun.schema import Type

if typing.TYPE_CHECKING:
    from llmrun.runner import OutputSpec

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


_SCHEMA_NAMES = {"string": "str", "integer": "int", "number": "float", "boolean": "bool"}
_SHAPING = (
    "items",
    "prefixItems",
    "enum",
    "const",
    "additionalProperties",
    "patternProperties",
    "oneOf",
    "not",
)


def lamini_schema_output_type(output: OutputSpec) -> dict[str, str]:
    """The flat Lamini ``output_type`` of a raw JSON Schema output (see the module docstring)."""
    from llmrun.json_schema import check_json_schema

    document = output.document or check_json_schema(output.json_schema, output.name)
    flat: dict[str, str] = {}
    _flatten_schema(document.schema, document.resolver(), "", flat, output.name)
    if not flat:
        raise UnsupportedFeatureError(
            f"output_schema {output.name!r} has no properties; Lamini's output_type needs an object "
            "with str, int, float or bool properties (use the local backend for other schemas)"
        )
    return flat


def _flatten_schema(node: Any, resolver: Any, prefix: str, out: dict[str, str], root: str) -> None:
    node, resolver = _resolved(node, resolver)
    where = f"{root}.{prefix[:-1]}" if prefix else root
    kind = _schema_kind(node, resolver)
    if kind != "object" or not isinstance(node.get("properties"), dict):
        raise UnsupportedFeatureError(
            f"output_schema {where} is not an object with properties, which Lamini's output_type cannot "
            "express; use the local backend for this schema"
        )
    for name, sub in node["properties"].items():
        sub, sub_resolver = _resolved(sub, resolver)
        kind = _schema_kind(sub, sub_resolver)
        if kind == "object":
            _flatten_schema(sub, sub_resolver, f"{prefix}{name}.", out, root)
        elif kind in _SCHEMA_NAMES and not any(k in sub for k in _SHAPING):
            out[prefix + name] = _SCHEMA_NAMES[kind]
        else:
            shaping = [k for k in _SHAPING if isinstance(sub, dict) and k in sub]
            what = f"uses {shaping[0]!r}" if shaping else f"has type {kind or 'Any'!r}"
            raise UnsupportedFeatureError(
                f"output_schema property {root}.{prefix}{name} {what}, which Lamini's output_type cannot "
                "express (it has only str, int, float and bool fields; nested objects are sent flattened). "
                "Simplify the property, or use the local backend, which supports it"
            )


def _resolved(node: Any, resolver: Any) -> tuple[Any, Any]:
    """``node`` with its ``$ref`` (and one-schema ``allOf``) followed."""
    for _ in range(32):
        if isinstance(node, dict) and isinstance(node.get("$ref"), str):
            found = resolver.lookup(node["$ref"])
            node, resolver = found.contents, found.resolver
        elif isinstance(node, dict) and len(node.get("allOf") or ()) == 1 and "type" not in node:
            node = node["allOf"][0]
        else:
            break
    return node, resolver


def _schema_kind(node: Any, resolver: Any) -> str | None:
    """The one non-null type of ``node`` (``type``, a type list or ``anyOf`` with null), else None."""
    if not isinstance(node, dict):
        return None
    kind = node.get("type")
    kinds = [kind] if isinstance(kind, str) else list(kind) if isinstance(kind, list) else []
    if not kinds and isinstance(node.get("anyOf"), list):
        for branch in node["anyOf"]:
            branch, _ = _resolved(branch, resolver)
            branch_kind = branch.get("type") if isinstance(branch, dict) else None
            if not isinstance(branch_kind, str) or len(branch) > 3:
                return None
            kinds.append(branch_kind)
    if not kinds and "properties" in node:
        kinds = ["object"]
    rest = [k for k in kinds if k != "null"]
    return rest[0] if len(rest) == 1 else None


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
