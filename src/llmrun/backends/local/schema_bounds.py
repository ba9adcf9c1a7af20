r"""Size a JSON Schema statically for its worst reply within a token budget.

A grammar built from a plain JSON Schema accepts texts of any length: an unbounded
``str`` field lets a weak model write until ``max_new_tokens`` runs out and leave the
JSON unclosed. :func:`bound_schema` returns a copy of the schema in which every part
that can grow has a bound, plus a per-string token cap ``T``, chosen so that *every*
output fits in the budget, for any tokenizer.

The local decoder no longer uses it for whole schemas: it follows each reply against
the budget (:mod:`~llmrun.backends.local.reply_plan`,
:mod:`~llmrun.backends.local.reply_tracker`) and uses this sizing (:class:`Bounder`,
:class:`Measure`) only for the values that keep a static worst case (numbers, enums,
``anyOf`` whose alternatives start alike ...), each with a share of its own. A remote
server cannot be followed token by token, so the OpenAI-wire backend sends the schema
:func:`bound_schema` sizes (:mod:`~llmrun.backends.openai.typed`).

The rule
--------
* **Cost model.** Output is compact JSON (no whitespace, separators ``,`` and ``:``).
  Every token holds at least one byte (byte-level BPE may spend one token per byte,
  SentencePiece falls back to one token per byte), so structure costs at most its UTF-8
  byte length in tokens: keys, quotes, commas, brackets, ``true``/``false``/``null``,
  enum and const values. An integer in ``[lo, hi]`` costs the longer of ``str(lo)`` and
  ``str(hi)``; a number (float) in ``[lo, hi]`` costs a sign, the integer digits and
  ``.`` plus 6 fraction digits (the precision xgrammar uses for ranged numbers).
  Optional properties, ``anyOf`` branches and arrays count at their largest.
* **Strings are capped in tokens, not characters.** The decoder lets a string's content
  take at most ``T`` tokens, then allows only tokens that close it (when the grammar
  lets it close: at most 3 more tokens to finish a UTF-8 character or an escape). So a
  string costs ``2 + T + 3`` tokens, or ``2 + 4 * maxLength`` when the schema gives a
  smaller ``maxLength`` (a character is at most 4 UTF-8 bytes), but at least
  ``2 + 4 * minLength``. Capping tokens rather than characters keeps strings as long as
  the budget really allows: a character bound must assume 4 tokens per character, and
  xgrammar 0.2 compiles and masks character-bounded strings slowly (a ``maxLength`` of
  60 takes about a second to compile). Strings may hold any character except raw
  control characters; the decoder writes the escapes ``\" \\ \/ \b \f \n \r \t``
  but not ``\uXXXX``.
* **One share ``T`` for everything that can grow**, the largest that fits the budget
  (found by bisection, the worst case grows with ``T``):

  - each string's content: at most ``T`` tokens (above); a ``maxLength`` the schema
    gives is kept as it is;
  - an array gets ``maxItems = min(ceil(T / 8), its maxItems)``, never below its
    ``minItems``; an object with free keys (``additionalProperties``,
    ``patternProperties``) gets ``maxProperties`` = its named properties + ``ceil(T / 8)``
    (its keys are strings, capped like any other);
  - an integer or number side the schema leaves open gets ``±(10**d - 1)`` with
    ``d = min(max(T, 1), 15)`` digits; bounds the schema gives are kept; an integer
    ``multipleOf`` becomes the enum of its (at most 64) multiples nearest 0;
  - a string with a ``pattern`` (a ``format`` is one, see
    :mod:`~llmrun.backends.local.schema_formats`) gets its unbounded repeats
    (``*``, ``+``, ``{n,}``) capped so the pattern matches at most
    ``min(T // b, its maxLength)`` characters, where ``b`` is the most bytes one of its
    characters takes in JSON (1 for printable ASCII; xgrammar ignores
    ``minLength``/``maxLength`` next to a pattern, so these keys are dropped from the
    grammar's copy and the reply's validation checks them), and costs ``2 + b * width``.

  So every string field gets the same fair share; a field whose own limit is smaller
  keeps its limit and leaves the rest to the others. No bound is ever loosened.
* **Optional properties by the budget.** When every optional property at once would
  leave strings fewer than :data:`MIN_SHARE` tokens, the fewest optional properties are
  left out of the grammar (the most deeply nested first, then the largest) until
  ``T >= MIN_SHARE``, or until the required ones fit at all.
* **Too small a budget** fails early: when the smallest bounded form (``T = 0``: empty
  strings and arrays, one-digit numbers, no optional property) does not fit,
  :class:`~llmrun.errors.InvalidInputError` says how many tokens it needs and names a
  budget that would do.

The schema is first normalized (:func:`~llmrun.backends.local.schema_normalize.normalize_schema`:
no ``$ref``, ``allOf``, ``oneOf``; untyped values made explicit), so any JSON Schema can
be bounded; what cannot be generated at all is refused there, naming the keyword.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeGuard

from llmrun.backends.local.schema_normalize import normalize_schema
from llmrun.backends.local.schema_patterns import bound_pattern, char_bytes, pattern_width
from llmrun.backends.local.schema_patterns import where as _where
from llmrun.checks import is_int_at_least
from llmrun.errors import InvalidInputError, UnsupportedFeatureError

#: Worst-case tokens per string character: one token per UTF-8 byte, up to 4 bytes.
TOKENS_PER_CHAR = 4
#: Tokens a string may take past its cap before it can close (the rest of a UTF-8 character).
CLOSE_SLACK = 3
#: Largest digit count given to a number side that the schema leaves open.
MAX_NUMBER_DIGITS = 15
#: Fraction digits xgrammar allows in a number with a range (``0.123456``).
FLOAT_FRACTION_DIGITS = 6
#: An integer ``multipleOf`` becomes the enum of at most this many multiples.
MAX_MULTIPLES = 64
#: String share below which optional properties are left out of the grammar to make room.
MIN_SHARE = 8
#: An array may hold one item per this many tokens of share (``maxItems = ceil(T / 8)``).
ITEMS_PER_TOKENS = 8
#: String cap (tokens) used in the "too small" error's suggestion.
_SUGGESTED_TOKENS = 32

_Json = dict[str, Any]


@dataclass(frozen=True)
class BoundedSchema:
    """A JSON Schema sized to a token budget; see the module docstring."""

    #: The JSON Schema for the grammar: a bounded copy of the (normalized) input schema.
    schema: _Json
    #: ``T``: the most tokens the content of one string may take before it must close.
    string_tokens: int
    #: The most tokens any output can take (``<= max_new_tokens``).
    worst_case_tokens: int
    #: Optional properties left out of the grammar to fit the budget (``a.b`` paths).
    dropped: tuple[str, ...] = ()


def check_schema_and_budget(schema: object, max_new_tokens: object) -> str:
    """Refuse a budget that is not a positive integer or a schema that is not a dict; the schema's title."""
    if not is_int_at_least(max_new_tokens, 1):
        raise InvalidInputError(
            f"max_new_tokens={max_new_tokens!r} is invalid: it must be a positive integer"
        )
    if not isinstance(schema, Mapping):
        raise InvalidInputError(f"the output schema must be a JSON Schema dict, got {type(schema).__name__}")
    return str(schema.get("title", "the output type"))


def bound_schema(schema: Mapping[str, Any], max_new_tokens: int) -> BoundedSchema:
    """Size ``schema`` so that any output of the constrained decoder fits in ``max_new_tokens``.

    See the module docstring for the rule. ``schema`` is any JSON Schema (a pydantic
    ``model_json_schema()`` or a raw one); it is normalized first
    (:func:`~llmrun.backends.local.schema_normalize.normalize_schema`) and not modified.
    """
    title = check_schema_and_budget(schema, max_new_tokens)
    plain = normalize_schema(schema)

    def cost(share: int, tree: _Json) -> int:
        return worst_case_tokens(_with_share(tree, share), share)

    tree, dropped = plain, tuple[str, ...]()
    if cost(MIN_SHARE, plain) > max_new_tokens:
        tree, dropped = _drop_optional(plain, lambda t: cost(MIN_SHARE, t) <= max_new_tokens)
        if cost(MIN_SHARE, tree) > max_new_tokens:
            tree, dropped = _drop_optional(plain, lambda t: cost(0, t) <= max_new_tokens)
    need = cost(0, tree)
    if need > max_new_tokens:
        raise InvalidInputError(
            f"max_new_tokens={max_new_tokens} is too small for {title}: its JSON can take up to {need} "
            f"tokens even with empty strings and lists and no optional fields (counting one token per "
            f"byte, the worst case). Use max_new_tokens >= {cost(_SUGGESTED_TOKENS, tree)} (strings of up "
            f"to {_SUGGESTED_TOKENS} tokens), or at least {need}."
        )
    lo, hi = 0, max_new_tokens  # invariant: share lo fits
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if cost(mid, tree) <= max_new_tokens:
            lo = mid
        else:
            hi = mid - 1
    return BoundedSchema(_with_share(tree, lo), lo, cost(lo, tree), dropped)


def _drop_optional(tree: _Json, fits: Callable[[_Json], bool]) -> tuple[_Json, tuple[str, ...]]:
    """Leave out the fewest optional properties (deepest, then largest first) so that ``fits``."""
    sizes = _Measure(_with_share(tree, MIN_SHARE), MIN_SHARE)
    # deepest first, then largest: nested details go before the fields that hold them
    optional = sorted(_optional_paths(tree, ()), key=lambda p: (-len(_names(p)), -sizes.at(p)))

    def without(count: int) -> _Json:
        out = copy.deepcopy(tree)
        for path in optional[:count]:
            _remove(out, path)
        return out

    lo, hi = 0, len(optional)  # find the smallest count that fits (hi always "fits or all")
    while lo < hi:
        mid = (lo + hi) // 2
        if fits(without(mid)):
            hi = mid
        else:
            lo = mid + 1
    return without(lo), tuple(".".join(_names(p)) for p in optional[:lo])


def _optional_paths(node: Any, path: tuple[str, ...]) -> Iterable[tuple[str, ...]]:
    """Key paths (into the schema dict) of every optional property, outer ones first."""
    if not isinstance(node, dict):
        return
    required = set(node.get("required") or ())
    keep = bool(node.get("minProperties"))  # leaving one out could break minProperties
    for name, sub in (node.get("properties") or {}).items():
        if name not in required and not keep:
            yield (*path, "properties", name)
        yield from _optional_paths(sub, (*path, "properties", name))
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            yield from _optional_paths(node[key], (*path, key))
    for key in ("anyOf", "prefixItems"):
        for i, sub in enumerate(node.get(key) or ()):
            yield from _optional_paths(sub, (*path, key, str(i)))


def _names(path: tuple[str, ...]) -> list[str]:
    return [path[i + 1] for i, p in enumerate(path[:-1]) if p == "properties"]


def _get(node: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        node = node[int(key)] if isinstance(node, list) else node.get(key) if isinstance(node, dict) else None
        if node is None:
            return None
    return node


def _remove(tree: _Json, path: tuple[str, ...]) -> None:
    parent = _get(tree, path[:-1])
    if isinstance(parent, dict):
        parent.pop(path[-1], None)


def bound_schema_with_share(schema: Mapping[str, Any], share: int) -> _Json:
    """Return ``schema``, normalized, bounded for the share ``T = share`` (see the module docstring)."""
    return _with_share(normalize_schema(schema), share)


def _with_share(schema: Mapping[str, Any], share: int) -> _Json:
    """A bounded copy of an already normalized ``schema``."""
    out = copy.deepcopy(dict(schema))
    _Bounder(share).node(out, ())
    return out


def worst_case_tokens(schema: Mapping[str, Any], string_tokens: int) -> int:
    """The most tokens any output for a bounded ``schema`` can take, strings capped at ``string_tokens``.

    Counts one token per UTF-8 byte of structure (see the module docstring). Raises
    :class:`~llmrun.errors.UnsupportedFeatureError` when some part is unbounded.
    """
    return _Measure(schema, string_tokens).node(schema, ())


# ----------------------------------------------------------------------------- bounding


class _Bounder:
    """Adds the bounds for one share ``T``, in place, to a (copied) normalized schema tree."""

    def __init__(self, share: int) -> None:
        self.share = share  # a pattern may match share // (bytes per character) characters
        self.pattern_share = share  # ... unless the caller gives patterns a share of their own
        self.items = -(-share // ITEMS_PER_TOKENS)  # ceil(T / 8)
        self.digits = min(max(share, 1), MAX_NUMBER_DIGITS)

    def node(self, node: Any, path: tuple[str, ...]) -> None:
        if not isinstance(node, dict):
            return
        for key in ("anyOf", "prefixItems"):
            for i, sub in enumerate(node.get(key) or ()):
                self.node(sub, (*path, f"{key}[{i}]") if key == "prefixItems" else path)
        for name, sub in (node.get("properties") or {}).items():
            self.node(sub, (*path, name))
        for key, label in (("items", "[]"), ("additionalProperties", "*")):
            self.node(node.get(key), (*path, label))
        if node.get("patternProperties"):
            bounded = {}
            for pattern, sub in node["patternProperties"].items():
                self.node(sub, (*path, "*"))
                chars = max(self.pattern_share // char_bytes(pattern), 1)
                bounded[bound_pattern(pattern, chars, (*path, "<key>"))] = sub
            node["patternProperties"] = bounded
        if isinstance(node.get("propertyNames"), dict):
            self.string(node["propertyNames"], (*path, "<key>"))
        if "enum" in node:
            return
        kind = node.get("type")
        if kind == "string":
            self.string(node, path)
        elif kind == "array":
            node["maxItems"] = max(int(node.get("minItems", 0)), min(self.items, _int(node, "maxItems")))
        elif kind == "object" and _free_keys(node):
            named = len(node.get("properties") or {})
            least = max(int(node.get("minProperties", 0)), len(node.get("required") or ()))
            node["maxProperties"] = max(least, min(named + self.items, _int(node, "maxProperties")))
        elif kind in ("integer", "number"):
            if "multipleOf" in node and kind == "number":
                raise UnsupportedFeatureError(
                    f"{_where(path)} uses multipleOf on a number, which the local constrained decoder "
                    "cannot enforce; use an integer or an enum of the allowed values"
                )
            self.number(node)
            if kind == "integer" and _is_number(node.get("multipleOf")):
                _integer_multiples(node)

    def string(self, node: _Json, path: tuple[str, ...]) -> None:
        if "pattern" in node:  # plain strings are capped in tokens by the decoder
            own = self.pattern_share // char_bytes(str(node["pattern"]))
            chars = max(int(node.get("minLength", 0)), min(own, _int(node, "maxLength")))
            node["pattern"] = bound_pattern(str(node["pattern"]), chars, path)
            node.pop("minLength", None)
            node.pop("maxLength", None)

    def number(self, node: _Json) -> None:
        cap = 10**self.digits - 1
        lo = _bound(node, "minimum", "exclusiveMinimum", max)
        hi = _bound(node, "maximum", "exclusiveMaximum", min)
        if lo is None:
            node["minimum"] = -cap if hi is None else min(-cap, math.floor(hi) - 1)
        if hi is None:
            node["maximum"] = cap if lo is None else max(cap, math.ceil(lo) + 1)


def _integer_multiples(node: _Json) -> None:
    """An integer ``multipleOf`` in a range as the enum of its multiples nearest 0 (xgrammar 0.2 drops
    ``multipleOf`` next to a range); a tightening to at most :data:`MAX_MULTIPLES` values."""
    step = int(node.pop("multipleOf"))
    lo, hi = math.ceil(node.pop("minimum")), math.floor(node.pop("maximum"))
    first, last = -(-lo // step), hi // step  # the multiples k * step in [lo, hi]
    ks = sorted(range(max(first, -MAX_MULTIPLES), min(last, MAX_MULTIPLES) + 1), key=abs)[:MAX_MULTIPLES]
    if not ks:
        raise UnsupportedFeatureError(f"no multiple of {step} lies in [{lo}, {hi}]")
    node.clear()
    node["enum"] = sorted(k * step for k in ks)


def _free_keys(node: Mapping[str, Any]) -> bool:
    """Whether an object node lets keys in besides its named properties."""
    return isinstance(node.get("additionalProperties"), dict) or bool(node.get("patternProperties"))


def _bound(
    node: _Json, inclusive: str, exclusive: str, pick: Callable[[float, float], float]
) -> float | None:
    values = [float(node[k]) for k in (inclusive, exclusive) if _is_number(node.get(k))]
    values = [v for v in values if math.isfinite(v)]
    if not values:
        return None
    return pick(values[0], values[-1])


def _int(node: Mapping[str, Any], key: str) -> int:
    value = node.get(key)
    return int(value) if _is_number(value) else 2**62


# ----------------------------------------------------------------------------- measuring


class _Measure:
    """Worst-case bytes (= tokens) of the compact JSON texts a bounded, normalized schema accepts."""

    def __init__(self, root: Mapping[str, Any], string_tokens: int) -> None:
        self.root = root
        self.string_tokens = string_tokens

    def at(self, path: tuple[str, ...]) -> int:
        """The worst-case cost of the property at ``path`` (its key, ``:`` and its value)."""
        return _literal(path[-1]) + 1 + self.node(_get(self.root, path), path)

    def node(self, node: Any, path: tuple[str, ...]) -> int:
        if node is False:
            return 0
        if not isinstance(node, Mapping) or not node.keys() - _ANNOTATIONS:
            raise UnsupportedFeatureError(
                f"{_where(path)} accepts any JSON value (type Any), which cannot be bounded"
            )
        if "$ref" in node or "allOf" in node or "oneOf" in node:
            raise UnsupportedFeatureError(f"{_where(path)} is not normalized ($ref/allOf/oneOf left)")
        if "const" in node:
            return _literal(node["const"])
        if "enum" in node:
            return max((_literal(v) for v in node["enum"]), default=0)
        if "anyOf" in node:
            return max((self.node(s, path) for s in node["anyOf"]), default=0)
        types = _types(node)
        if not types:
            raise UnsupportedFeatureError(f"{_where(path)} has no type, so it cannot be bounded")
        return max(self.typed(t, node, path) for t in types)

    def typed(self, kind: str, node: Mapping[str, Any], path: tuple[str, ...]) -> int:
        if kind == "null":
            return 4
        if kind == "boolean":
            return 5
        if kind in ("integer", "number"):
            lo = _bound(dict(node), "minimum", "exclusiveMinimum", max)
            hi = _bound(dict(node), "maximum", "exclusiveMaximum", min)
            if lo is None or hi is None:
                raise UnsupportedFeatureError(f"{_where(path)} is a {kind} without minimum and maximum")
            if kind == "integer":
                return max(len(str(math.ceil(lo))), len(str(math.floor(hi))))
            sign = 1 if lo < 0 else 0
            return sign + len(str(int(max(abs(lo), abs(hi))))) + 1 + FLOAT_FRACTION_DIGITS
        if kind == "string":
            if "pattern" in node:
                pattern = str(node["pattern"])
                return 2 + char_bytes(pattern) * pattern_width(pattern, path)
            content = min(self.string_tokens + CLOSE_SLACK, TOKENS_PER_CHAR * _int(node, "maxLength"))
            return 2 + max(content, TOKENS_PER_CHAR * int(node.get("minLength", 0)))
        if kind == "array":
            return self.array(node, path)
        if kind == "object":
            return self.object(node, path)
        raise UnsupportedFeatureError(f"{_where(path)} has the unknown JSON type {kind!r}")

    def array(self, node: Mapping[str, Any], path: tuple[str, ...]) -> int:
        prefix = list(node.get("prefixItems") or ())
        items = node.get("items", not prefix)
        if items is False:
            count, extra = min(len(prefix), _int(node, "maxItems")), 0
        else:
            if not _is_number(node.get("maxItems")):
                raise UnsupportedFeatureError(f"{_where(path)} is an array without maxItems")
            count = int(node["maxItems"])
            extra = max(count - len(prefix), 0)
        size = sum(self.node(s, (*path, f"[{i}]")) for i, s in enumerate(prefix[:count]))
        if extra:
            size += extra * self.node(items, (*path, "[]"))
        return 2 + size + max(count - 1, 0)

    def object(self, node: Mapping[str, Any], path: tuple[str, ...]) -> int:
        props: Mapping[str, Any] = node.get("properties") or {}
        entries = [_literal(k) + 1 + self.node(v, (*path, k)) for k, v in props.items()]
        count = len(entries)
        if _free_keys(node):
            if not _is_number(node.get("maxProperties")):
                raise UnsupportedFeatureError(
                    f"{_where(path)} is an object with free keys without maxProperties"
                )
            count = int(node["maxProperties"])
            names = node.get("propertyNames")
            key = self.typed("string", names if isinstance(names, dict) else {}, (*path, "<key>"))
            values = [self.node(node.get("additionalProperties", False), (*path, "*"))]
            for pattern, sub in (node.get("patternProperties") or {}).items():
                width = pattern_width(pattern, (*path, "<key>"))
                key = max(key, 2 + char_bytes(pattern) * width)
                values.append(self.node(sub, (*path, "*")))
            entries += [key + 1 + max(values)] * count
            entries = sorted(entries, reverse=True)[:count]
        return 2 + sum(entries) + max(count - 1, 0)


_ANNOTATIONS = frozenset(
    {"title", "description", "default", "examples", "$comment", "deprecated", "readOnly"}
)


def _types(node: Mapping[str, Any]) -> set[str]:
    kind = node.get("type")
    if isinstance(kind, str):
        return {kind}
    if isinstance(kind, list):
        return {str(k) for k in kind}
    if "properties" in node:
        return {"object"}
    return set()


def _literal(value: Any) -> int:
    """Bytes of a JSON literal, the larger of its raw-UTF-8 and ASCII-escaped spellings."""
    raw = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    escaped = json.dumps(value, ensure_ascii=True, separators=(",", ":"))
    return max(len(raw.encode()), len(escaped))


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


# the names the reply planner (reply_plan.py) uses for the values it keeps statically bounded
Bounder = _Bounder
Measure = _Measure
ANNOTATIONS = _ANNOTATIONS
literal_bytes = _literal
drop_optional = _drop_optional
