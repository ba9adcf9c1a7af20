"""What a bounded value of a typed reply looks like: its first bytes, its smallest text.

Helpers of :mod:`~llmrun.backends.local.reply_plan` for the values it keeps with a static
worst case (numbers, enums, unions that cannot be followed ...), read from their
(normalized, bounded) JSON Schema.
"""

from __future__ import annotations

import json
import math
from typing import Any

from llmrun.backends.local.reply_patterns import pattern_automaton
from llmrun.backends.local.schema_bounds import literal_bytes

__all__ = ["drop_false_patterns", "first_bytes", "grows", "smallest"]

_NUMBER_START = frozenset(b"-0123456789")
_Json = dict[str, Any]


def drop_false_patterns(node: Any) -> None:
    """Leave out ``patternProperties`` whose schema is ``false`` where no other key is allowed either
    (the same keys are refused; the grammar engine refuses a ``false`` schema)."""
    if isinstance(node, list):
        for sub in node:
            drop_false_patterns(sub)
        return
    if not isinstance(node, dict):
        return
    patterns = node.get("patternProperties")
    if isinstance(patterns, dict) and node.get("additionalProperties", False) is False:
        kept = {p: s for p, s in patterns.items() if s is not False}
        if kept:
            node["patternProperties"] = kept
        else:
            node.pop("patternProperties")
    for key, sub in node.items():
        if key in ("properties", "patternProperties") and isinstance(sub, dict):
            for value in sub.values():
                drop_false_patterns(value)
        elif key in ("items", "prefixItems", "anyOf", "additionalProperties"):
            drop_false_patterns(sub)


def first_bytes(node: Any) -> frozenset[int]:
    """The bytes a (normalized, bounded) value's compact JSON can start with."""
    if not isinstance(node, dict):
        return frozenset(b'{["-0123456789tfn')
    if "anyOf" in node:
        return frozenset(b for sub in node["anyOf"] for b in first_bytes(sub))
    if "enum" in node or "const" in node:
        values = node["enum"] if "enum" in node else [node["const"]]
        return frozenset(_dump(v)[0] for v in values)
    kind = node.get("type")
    starts = {"string": b'"', "array": b"[", "object": b"{", "boolean": b"tf", "null": b"n"}
    if kind in starts:
        return frozenset(starts[kind])
    if kind in ("integer", "number"):
        return _NUMBER_START
    return frozenset(b'{["-0123456789tfn')


def smallest(node: Any) -> bytes | None:
    """The shortest compact JSON text of a bounded value, where it is simple to know; else None."""
    if not isinstance(node, dict):
        return None
    if "enum" in node or "const" in node:
        values = node["enum"] if "enum" in node else [node["const"]]
        texts = [_dump(v) for v in values if literal_bytes(v) == len(_dump(v))]
        return min(texts, key=len, default=None)
    if "anyOf" in node:
        found = [t for t in (smallest(a) for a in node["anyOf"]) if t is not None]
        return min(found, key=len, default=None)
    kind = node.get("type")
    if kind == "null":
        return b"null"
    if kind == "boolean":
        return b"true"
    if kind in ("integer", "number"):
        return _smallest_number(node)
    if kind == "string":
        if "pattern" in node:
            automaton = pattern_automaton(str(node["pattern"]))
            return None if automaton is None else b'"' + automaton.shortest + b'"'
        return b'"' + b"a" * int(node.get("minLength", 0)) + b'"'
    if kind == "array":
        prefix, items = list(node.get("prefixItems") or ()), node.get("items", False)
        count = int(node.get("minItems", 0))
        parts = [smallest(prefix[i] if i < len(prefix) else items) for i in range(count)]
        return None if None in parts else b"[" + b",".join(p for p in parts if p is not None) + b"]"
    if kind == "object":
        required = list(node.get("required") or ())
        if int(node.get("minProperties", 0)) > len(required):
            return None
        props = node.get("properties") or {}
        if any(name not in props for name in required):
            return None
        entries = [(_dump(name), smallest(props[name])) for name in props if name in required]
        if any(text is None for _, text in entries):
            return None
        return b"{" + b",".join(k + b":" + (t or b"") for k, t in entries) + b"}"
    return None


def _smallest_number(node: _Json) -> bytes | None:
    """The shortest integer text in the node's range (0 or the bound nearest it); None if none."""
    if "multipleOf" in node:
        return None
    lo, hi = node.get("minimum"), node.get("maximum")
    xlo, xhi = node.get("exclusiveMinimum"), node.get("exclusiveMaximum")

    def inside(v: int) -> bool:
        return (
            (lo is None or v >= lo)
            and (hi is None or v <= hi)
            and (xlo is None or v > xlo)
            and (xhi is None or v < xhi)
        )

    floor_lo = max([float(b) for b in (lo, xlo) if b is not None], default=-math.inf)
    ceil_hi = min([float(b) for b in (hi, xhi) if b is not None], default=math.inf)
    candidates = [0]
    if math.isfinite(floor_lo):
        candidates += [math.ceil(floor_lo), math.ceil(floor_lo) + 1]
    if math.isfinite(ceil_hi):
        candidates += [math.floor(ceil_hi), math.floor(ceil_hi) - 1]
    fits = [str(v).encode() for v in candidates if inside(v)]
    return min(fits, key=len, default=None)


def grows(node: Any) -> bool:
    """Whether a bounded value's worst case depends on the share (strings, lists, free keys, patterns)."""
    if isinstance(node, list):
        return any(grows(v) for v in node)
    if not isinstance(node, dict):
        return False
    if "enum" in node or "const" in node:
        return False
    if node.get("type") in ("string", "array", "object", "integer", "number") or "anyOf" in node:
        return True
    return any(grows(v) for k, v in node.items() if k in ("properties", "items", "prefixItems"))


def _dump(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
