"""Readers of one JSON type's keywords, for the normalizer: strings, numbers, property-name patterns."""

from __future__ import annotations

import math
import re
from typing import Any

from llmrun.backends.local.schema_formats import FORMAT_PATTERNS
from llmrun.backends.local.schema_patterns import anchor_pattern
from llmrun.json_schema import is_finite_number

Atom = dict[str, Any]


def string_atom(node: dict[str, Any]) -> Atom | None:
    """A string atom of ``node``'s keywords (``format`` as a pattern); None when no string fits."""
    atom: Atom = {"type": "string"}
    for key in ("minLength", "maxLength"):
        if is_finite_number(node.get(key)):
            atom[key] = int(node[key])
    pattern = node.get("pattern")
    fmt = node.get("format")
    if isinstance(pattern, str):
        atom["pattern"] = anchor_pattern(pattern, atom.get("maxLength"))
    elif isinstance(fmt, str) and fmt in FORMAT_PATTERNS:
        atom["pattern"] = _FORMAT_ANCHORED[fmt]
    if atom.get("minLength", 0) > atom.get("maxLength", math.inf):
        return None
    return atom


_FORMAT_ANCHORED = {fmt: f"^(?:{pattern})$" for fmt, pattern in FORMAT_PATTERNS.items()}


def is_format_pattern(pattern: str) -> bool:
    """Whether ``pattern`` is the one :func:`string_atom` writes for a ``format`` (not the schema's own)."""
    return pattern in _FORMAT_ANCHORED.values()


def search(pattern: str, text: str) -> bool:
    """Whether ``pattern`` matches somewhere in ``text`` (False for a pattern ``re`` cannot read)."""
    try:
        return re.search(pattern, text) is not None
    except re.error:
        return False


def lower_bound(node: dict[str, Any]) -> tuple[float | None, bool]:
    """The tightest lower bound of a number node and whether it is exclusive (draft 4 flags too)."""
    lo, ex = node.get("minimum"), node.get("exclusiveMinimum")
    if ex is True and is_finite_number(lo):  # draft 4: a flag on minimum
        return lo, True
    if is_finite_number(ex) and (not is_finite_number(lo) or ex >= lo):
        return ex, True
    return (lo, False) if is_finite_number(lo) else (None, False)


def upper_bound(node: dict[str, Any]) -> tuple[float | None, bool]:
    """The tightest upper bound of a number node and whether it is exclusive."""
    hi, ex = node.get("maximum"), node.get("exclusiveMaximum")
    if ex is True and is_finite_number(hi):
        return hi, True
    if is_finite_number(ex) and (not is_finite_number(hi) or ex <= hi):
        return ex, True
    return (hi, False) if is_finite_number(hi) else (None, False)


#: The integers the grammar engine can write (xgrammar refuses bounds outside 64 bits).
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def integer_bounds(atom: Atom) -> Atom | None:
    """Integer bounds as inclusive integers within 64 bits; None when the range holds no such integer.

    Bounds past 64 bits (``9223372036854776000``, a float written as an integer) are
    tightened to the 64-bit range, which is all the grammar engine can write.
    """
    lo = hi = None
    if "minimum" in atom:
        lo = math.ceil(atom.pop("minimum"))
    if "exclusiveMinimum" in atom:
        x = math.floor(atom.pop("exclusiveMinimum")) + 1
        lo = x if lo is None else max(lo, x)
    if "maximum" in atom:
        hi = math.floor(atom.pop("maximum"))
    if "exclusiveMaximum" in atom:
        x = math.ceil(atom.pop("exclusiveMaximum")) - 1
        hi = x if hi is None else min(hi, x)
    if lo is not None and lo < INT64_MIN:
        lo = INT64_MIN
    if hi is not None and hi > INT64_MAX:
        hi = INT64_MAX
    if lo is not None:
        atom["minimum"] = lo
    if hi is not None:
        atom["maximum"] = hi
    if (INT64_MIN if lo is None else lo) > (INT64_MAX if hi is None else hi):
        return None
    return atom


def clean_number(value: float) -> float | int:
    """``value`` without float noise (``0.30000000000000004`` -> ``0.3``), an int when whole."""
    rounded = round(value, 12)
    return int(rounded) if rounded == int(rounded) else rounded
