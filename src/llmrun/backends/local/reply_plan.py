r"""Plan a typed reply's budget: the grammar's schema and the tree the reply tracker walks.

The local decoder no longer sizes a schema for its *worst* reply. :func:`plan_reply`
keeps the schema's own bounds for everything that can grow while it is written
(plain strings, arrays, objects with free keys, optional properties) and returns a
:class:`ReplyPlan`: the JSON Schema the grammar is compiled from and a tree of
nodes, each knowing the cost in tokens of its smallest valid value. Per row,
:class:`~llmrun.backends.local.reply_tracker.ReplyTracker` follows the reply through
that tree and keeps *closing cost <= tokens left* after every token (see there).

Nodes
-----
* **Followed** (no bound added): objects (named properties in the schema's order,
  then free keys from ``additionalProperties`` or one ``patternProperties`` pattern),
  arrays (``prefixItems``, ``items``, ``minItems``), plain strings, strings with a
  ``pattern`` or ``format`` (through the pattern's automaton,
  :mod:`~llmrun.backends.local.reply_patterns`; the grammar caps its unbounded repeats
  at :data:`PATTERN_CHARS` characters), and ``anyOf``: the first byte picks the
  alternative, and alternatives that start alike are followed together (:data:`MUL`)
  when each ends on a byte of its own (a string, an object, an array).
* **Bounded** (one value with a static worst case, sized as
  :mod:`~llmrun.backends.local.schema_bounds` does with a share ``T`` of its own):
  numbers (15 digits for open sides), booleans, null, ``enum``/``const``, patterns the
  automaton library cannot read, objects with several ``patternProperties``,
  ``propertyNames`` or a ``minProperties`` above their required keys, and the ``anyOf``
  that cannot be followed. Their smallest value (:func:`~llmrun.backends.local.reply_values.smallest`:
  ``0`` or the bound nearest it, ``true``, the shortest enum value ...) is what closing
  writes; any other value counts at its worst case. ``T`` is the largest (at most
  :data:`MAX_SHARE`) whose worst case exceeds the smallest value by at most half of
  what the schema's smallest reply leaves of the budget; strings inside are capped at
  ``T`` tokens by the decoder, arrays at ``T / 2`` items, patterns at
  :data:`BOUNDED_PATTERN_CHARS` characters.
* A normalized schema longer than :data:`MAX_SCHEMA_CHARS` first loses optional
  properties, the most deeply nested first (the grammar engine takes minutes on
  schemas of hundreds of kB).

Cost model: one token per UTF-8 byte of compact JSON (any tokenizer has at least
one byte per token), so the smallest reply's bytes bound the tokens it needs. A
schema whose smallest reply does not fit ``max_new_tokens`` is refused before any
generation with :class:`~llmrun.errors.InvalidInputError`, naming the tokens it needs.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from llmrun.backends.local.reply_patterns import PatternAutomaton, pattern_automaton
from llmrun.backends.local.reply_values import drop_false_patterns, first_bytes, grows, smallest
from llmrun.backends.local.schema_bounds import (
    MAX_NUMBER_DIGITS,
    Bounder,
    Measure,
    check_schema_and_budget,
    drop_optional,
)
from llmrun.backends.local.schema_normalize import normalize_schema
from llmrun.backends.local.schema_patterns import bound_pattern
from llmrun.errors import InvalidInputError

__all__ = ["ARR", "MUL", "OBJ", "OPQ", "PAT", "STR", "UNI", "Node", "ReplyPlan", "plan_reply"]

#: Node kinds.
OBJ, ARR, STR, OPQ, UNI, PAT, MUL = range(7)
#: First bytes of values that end on a byte of their own (strings, objects, arrays).
_SELF_ENDING = frozenset(b'"{[')
#: A bounded value may take at most 1 / BOUNDED_SHARE of what the smallest reply leaves.
BOUNDED_SHARE = 2
#: The largest share a bounded value gets: the grammar engine spells out bounded repeats, so an
#: array of objects with ``maxItems`` 30 compiles slowly; a bounded value is rarely long.
MAX_SHARE = 32
#: Characters a pattern may take in a bounded value (its unbounded repeats capped).
BOUNDED_PATTERN_CHARS = 64
#: A bounded array may hold one item per this many tokens of its share.
ITEMS_PER_SHARE = 2
#: Characters a pattern string may take (its unbounded repeats capped), for the same reason.
PATTERN_CHARS = 256
#: A normalized schema longer than this (JSON characters) loses optional properties, the most deeply
#: nested first, until it is not: the grammar engine takes minutes on schemas of hundreds of kB.
MAX_SCHEMA_CHARS = 20000
_Json = dict[str, Any]


class Node:
    """One value position of the schema, as the tracker sees it (see the module docstring)."""

    __slots__ = (
        "alts",
        "automaton",
        "by_byte",
        "comma_cost",
        "first",
        "free",
        "free_key_cost",
        "items",
        "key_automaton",
        "kind",
        "min_cost",
        "min_items",
        "min_len",
        "min_text",
        "names",
        "next_req",
        "prefix",
        "props",
        "req_suffix",
        "share",
        "tail",
        "width",
    )  # fmt: skip

    def __init__(self, kind: int) -> None:
        self.kind = kind
        self.min_cost = 0  # tokens of the smallest valid value
        self.min_text: bytes | None = None  # that value (None: not known, it counts at `width`)
        self.width = 0  # OPQ: the most tokens the value can take
        self.share: int | None = None  # OPQ: its share T (strings in it are capped at T tokens)
        self.first: frozenset[int] = frozenset()  # the bytes the value can start with
        self.min_len = 0  # STR: minLength
        self.prefix: tuple[Node, ...] = ()  # ARR
        self.items: Node | None = None
        self.min_items = 0
        self.tail: tuple[int, ...] = ()  # ARR: closing cost after n items, n <= min_items
        self.props: tuple[tuple[bytes, Node, bool], ...] = ()  # OBJ: (key literal, value, required)
        self.names: dict[bytes, int] = {}  # OBJ: key literal -> index
        self.free: Node | None = None  # OBJ: the value of free keys
        self.req_suffix: tuple[int, ...] = ()  # OBJ: cost of the required entries after index p - 1
        self.next_req: tuple[int, ...] = ()  # OBJ: the first required index >= p (len: none)
        self.comma_cost: tuple[int, ...] = ()  # OBJ: after "," once past index p - 1
        self.by_byte: dict[int, Node] = {}  # UNI: the alternative a first byte selects
        self.alts: tuple[Node, ...] = ()  # MUL: alternatives that start alike, followed together
        self.automaton: PatternAutomaton | None = None  # PAT: the pattern's DFA
        self.key_automaton: PatternAutomaton | None = None  # OBJ: the DFA free keys follow (None: any key)
        self.free_key_cost = 2  # OBJ: the smallest free key, quotes included

    def item(self, index: int) -> Node | None:
        """ARR: the schema of item ``index`` (None: no such item)."""
        return self.prefix[index] if index < len(self.prefix) else self.items

    def array_tail(self, count: int) -> int:
        """ARR: tokens to close the array after ``count`` items (at least 1: ``]``)."""
        return self.tail[count] if count < len(self.tail) else 1

    def object_tail(self, pos: int, first: bool) -> int:
        """OBJ: tokens to close the object after the property at index ``pos`` (-1: none yet)."""
        cost = self.req_suffix[pos + 1] + 1
        return cost - 1 if first and self.next_req[pos + 1] < len(self.props) else cost

    def free_allowed(self, pos: int) -> bool:
        """OBJ: whether a free key may come after the property at ``pos`` (all required ones written)."""
        return self.free is not None and self.next_req[pos + 1] == len(self.props)

    def allowed(self, pos: int) -> range:
        """OBJ: the named properties that may come after index ``pos`` (in order, none required skipped)."""
        return range(pos + 1, min(self.next_req[pos + 1] + 1, len(self.props)))

    def entry_cost(self, index: int) -> int:
        """OBJ: ``"key":`` and the smallest value of property ``index``, no comma."""
        key, value, _ = self.props[index]
        return len(key) + 1 + value.min_cost

    def free_entry_cost(self) -> int:
        """OBJ: the smallest free key, ``:`` and the smallest free value, no comma."""
        assert self.free is not None
        return self.free_key_cost + 1 + self.free.min_cost


@dataclass(frozen=True, eq=False)
class ReplyPlan:
    """What :func:`plan_reply` returns."""

    #: The JSON Schema the grammar is compiled from (normalized, bounded where it must be).
    schema: _Json
    #: The tree the tracker follows.
    root: Node
    #: The largest share ``T`` a bounded value got (tokens).
    share: int
    #: Tokens of the smallest valid reply.
    min_tokens: int


def plan_reply(schema: Mapping[str, Any], max_new_tokens: int) -> ReplyPlan:
    """Plan ``schema``'s reply for ``max_new_tokens`` (see the module docstring)."""
    title = check_schema_and_budget(schema, max_new_tokens)
    plain = normalize_schema(schema)
    if len(json.dumps(plain)) > MAX_SCHEMA_CHARS:  # deep unrolled $refs: keep the grammar compilable
        plain, _ = drop_optional(plain, lambda tree: len(json.dumps(tree)) <= MAX_SCHEMA_CHARS)
    smallest = _Planner(plain, 0)
    if smallest.root.min_cost > max_new_tokens:
        raise InvalidInputError(
            f"max_new_tokens={max_new_tokens} is too small for {title}: its smallest valid JSON (empty "
            f"strings and lists, no optional fields) takes up to {smallest.root.min_cost} tokens (counting "
            f"one token per byte, the worst case). Use max_new_tokens >= {smallest.root.min_cost + 64} "
            f"to leave room for content, or at least {smallest.root.min_cost}."
        )
    limit = (max_new_tokens - smallest.root.min_cost) // BOUNDED_SHARE
    best = _Planner(plain, limit) if smallest.sized and limit > 0 else smallest
    if best.root.min_cost > max_new_tokens:  # bounded values without a known smallest value grew
        best = smallest
    return ReplyPlan(best.schema, best.root, best.share, best.root.min_cost)


class _Planner:
    """Builds the grammar's schema and the node tree for one share ``T``."""

    def __init__(self, plain: _Json, limit: int) -> None:
        self.limit = limit  # the most a bounded value may take beyond its smallest value
        self.share = 0  # the largest share given to a bounded value
        self.sized = False  # whether some bounded value grows with its share
        self.schema, self.root = self.node(plain, ())

    def node(self, node: Any, path: tuple[str, ...]) -> tuple[Any, Node]:
        if not isinstance(node, dict):
            return self.bounded(node, path)
        if "anyOf" in node:
            return self.union(node, path)
        if "enum" in node or "const" in node:
            return self.bounded(node, path)
        kind = node.get("type")
        if kind == "string" and "pattern" not in node:
            return self.string(node)
        if kind == "string" and isinstance(node.get("pattern"), str):
            automaton = pattern_automaton(node["pattern"])
            if automaton is not None:
                return self.pattern(node, automaton, path)
        if kind == "array":
            return self.array(node, path)
        if kind == "object" and _plain_object(node):
            return self.object(node, path)
        return self.bounded(node, path)

    def union(self, node: _Json, path: tuple[str, ...]) -> tuple[Any, Node]:
        """``anyOf``: the first byte picks the alternative; alternatives that start alike are
        followed together (:data:`MUL`) when each ends on a byte of its own (a string, an object,
        an array), else the whole union is one bounded value."""
        built = [self.node(atom, path) for atom in node["anyOf"]]
        groups: dict[int, list[Node]] = {}
        for _, sub in built:
            for b in sub.first:
                groups.setdefault(b, []).append(sub)
        out = Node(UNI)
        together: dict[tuple[int, ...], Node] = {}
        for b, subs in groups.items():
            if len(subs) == 1:
                out.by_byte[b] = subs[0]
                continue
            if not all(sub.first <= _SELF_ENDING for sub in subs):
                return self.bounded(node, path)
            key = tuple(id(sub) for sub in subs)
            if key not in together:
                multi = together[key] = Node(MUL)
                multi.alts = tuple(subs)
                multi.first = frozenset.union(*(sub.first for sub in subs))
                best = min(subs, key=lambda n: n.min_cost)
                multi.min_cost, multi.min_text = best.min_cost, best.min_text
            out.by_byte[b] = together[key]
        out.first = frozenset(groups)
        cheapest = min((sub for _, sub in built), key=lambda n: n.min_cost)
        out.min_cost, out.min_text = cheapest.min_cost, cheapest.min_text
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        return {**rest, "anyOf": [g for g, _ in built]}, out

    def string(self, node: _Json) -> tuple[Any, Node]:
        out = Node(STR)
        out.first = frozenset(b'"')
        out.min_len = int(node.get("minLength", 0))
        out.min_text = b'"' + b"a" * out.min_len + b'"'
        out.min_cost = len(out.min_text)
        return dict(node), out

    def pattern(self, node: _Json, automaton: PatternAutomaton, path: tuple[str, ...]) -> tuple[Any, Node]:
        """A ``pattern`` string followed character by character through its automaton."""
        grammar = {k: v for k, v in node.items() if k not in ("minLength", "maxLength")}  # see Bounder
        chars = max(int(node.get("minLength", 0)), min(PATTERN_CHARS, int(node.get("maxLength", 1 << 30))))
        grammar["pattern"] = bound_pattern(str(node["pattern"]), chars, path)  # a small grammar
        out = Node(PAT)
        out.first = frozenset(b'"')
        out.automaton = automaton
        out.min_text = b'"' + automaton.shortest + b'"'
        out.min_cost = len(out.min_text)
        return grammar, out

    def array(self, node: _Json, path: tuple[str, ...]) -> tuple[Any, Node]:
        out, grammar = Node(ARR), dict(node)
        out.first = frozenset(b"[")
        built = [self.node(sub, (*path, f"[{i}]")) for i, sub in enumerate(node.get("prefixItems") or ())]
        if built:
            grammar["prefixItems"] = [g for g, _ in built]
            out.prefix = tuple(n for _, n in built)
        items = node.get("items", not built)
        if items is not False:
            grammar["items"], out.items = self.node(items if isinstance(items, dict) else {}, (*path, "[]"))
        out.min_items = int(node.get("minItems", 0))
        sizes = [_min_of(out.item(i)) for i in range(out.min_items)]
        tail = [1] * (out.min_items + 1)
        for n in range(out.min_items - 1, -1, -1):
            tail[n] = tail[n + 1] + sizes[n] + 1
        out.tail = tuple(t - 1 if n == 0 and out.min_items else t for n, t in enumerate(tail))
        out.min_cost = 1 + out.tail[0]
        texts = [_text_of(out.item(i)) for i in range(out.min_items)]
        if all(t is not None for t in texts):
            out.min_text = b"[" + b",".join(t for t in texts if t is not None) + b"]"
        return grammar, out

    def object(self, node: _Json, path: tuple[str, ...]) -> tuple[Any, Node]:
        out, grammar = Node(OBJ), dict(node)
        out.first = frozenset(b"{")
        required = set(node.get("required") or ())
        props, gprops = [], {}
        for name, sub in (node.get("properties") or {}).items():
            gprops[name], value = self.node(sub, (*path, name))
            key = json.dumps(name, ensure_ascii=False).encode()
            props.append((key, value, name in required))
        if "properties" in node:
            grammar["properties"] = gprops
        out.props = tuple(props)
        out.names = {key: i for i, (key, _, _) in enumerate(props)}
        extra = node.get("additionalProperties", False)
        if extra is not False:
            grammar["additionalProperties"], out.free = self.node(
                extra if isinstance(extra, dict) else {}, (*path, "*")
            )
        for pattern, sub in (node.get("patternProperties") or {}).items():  # one, see _plain_object
            value_grammar, out.free = self.node(sub, (*path, "*"))
            grammar["patternProperties"] = {pattern: value_grammar}
            out.key_automaton = pattern_automaton(pattern)
            assert out.key_automaton is not None
            out.free_key_cost = 2 + len(out.key_automaton.shortest)
        n = len(props)
        req_suffix, next_req = [0] * (n + 1), [n] * (n + 1)
        for i in range(n - 1, -1, -1):
            required_here = props[i][2]
            req_suffix[i] = req_suffix[i + 1] + (1 + out.entry_cost(i) if required_here else 0)
            next_req[i] = i if required_here else next_req[i + 1]
        out.req_suffix, out.next_req = tuple(req_suffix), tuple(next_req)
        out.comma_cost = tuple(_comma_cost(out, p - 1) for p in range(n + 1))
        out.min_cost = 1 + out.object_tail(-1, True)
        texts = [(k, v.min_text) for k, v, req in props if req]
        if all(t is not None for _, t in texts):
            out.min_text = b"{" + b",".join(k + b":" + (t or b"") for k, t in texts) + b"}"
        return grammar, out

    def bounded(self, node: Any, path: tuple[str, ...]) -> tuple[Any, Node]:
        """A value with a static worst case, bounded with the largest share whose worst case exceeds
        its smallest value by at most ``limit`` (0 when none does), measured, its smallest value found."""
        base = copy.deepcopy(node)
        drop_false_patterns(base)
        text = smallest(base)

        def build(share: int) -> tuple[Any, int]:
            grammar = copy.deepcopy(base)
            bounder = Bounder(share)
            bounder.items = -(-share // ITEMS_PER_SHARE)  # more items than the worst-case sizing gave
            bounder.pattern_share = BOUNDED_PATTERN_CHARS  # a pattern's longest match: not all of them
            if isinstance(base, dict) and base.get("type") in ("integer", "number"):
                bounder.digits = MAX_NUMBER_DIGITS  # a number alone gets its digits whatever the share
            bounder.node(grammar, path)
            return grammar, Measure(grammar, share).node(grammar, path)

        share, (grammar, width) = 0, build(0)
        if grows(base):
            self.sized = True
            lo, hi = 0, min(self.limit, MAX_SHARE)
            while lo < hi:
                mid = (lo + hi + 1) // 2
                trial = build(mid)
                if trial[1] - (0 if text is None else len(text)) <= self.limit:
                    lo, share, (grammar, width) = mid, mid, trial
                else:
                    hi = mid - 1
        out = Node(OPQ)
        out.width, out.share = width, (share if grows(base) else None)
        out.first = first_bytes(grammar)
        out.min_text = text if text is not None and len(text) <= width else None
        out.min_cost = width if out.min_text is None else len(out.min_text)
        self.share = max(self.share, share)
        return grammar, out


def _comma_cost(node: Node, pos: int) -> int:
    """OBJ: after ``,`` past index ``pos``: the cheapest next entry and the close after it."""
    costs = [node.entry_cost(q) + node.object_tail(q, False) for q in node.allowed(pos)]
    if node.free_allowed(pos):
        costs.append(node.free_entry_cost() + node.object_tail(len(node.props) - 1, False))
    return min(costs, default=1 << 30)


def _plain_object(node: _Json) -> bool:
    """Whether an object can be followed key by key: free keys from ``additionalProperties`` or one
    ``patternProperties`` pattern (not both), no ``propertyNames``, minProperties met by required."""
    if isinstance(node.get("propertyNames"), dict):
        return False
    patterns = node.get("patternProperties") or {}
    if patterns and (
        len(patterns) > 1
        or node.get("additionalProperties", False) is not False
        or any(s is False for s in patterns.values())
        or pattern_automaton(next(iter(patterns))) is None
    ):
        return False
    return int(node.get("minProperties", 0)) <= len(node.get("required") or ())


def _min_of(node: Node | None) -> int:
    return 1 << 30 if node is None else node.min_cost


def _text_of(node: Node | None) -> bytes | None:
    return None if node is None else node.min_text
