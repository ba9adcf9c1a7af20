"""Rewrite any JSON Schema into the plain form the bounded grammar path enforces exactly or more tightly.

:func:`normalize_schema` returns a schema with no ``$ref``, ``allOf``, ``oneOf``, ``not``,
``const``, ``format`` or type lists: an ``anyOf`` of *atoms*, each either ``{"enum": [...]}``
or one ``type`` with that type's keywords, nested schemas normalized the same way. Every
JSON text the result accepts is valid for the input schema, or else is caught by the
validation of every reply against the original schema (the keywords listed last below).

* ``$ref`` anywhere (``referencing``) is inlined; a recursive type is unrolled
  :data:`REF_DEPTH` levels and the deepest level left out (optional fields, array items
  and ``anyOf`` branches that need it disappear; a schema that cannot do without it is refused).
* ``allOf`` and ``$ref`` with siblings are merged: types intersected, bounds tightened,
  properties merged, enum values filtered by validating them (``jsonschema``).
* ``allOf``/``anyOf``/``oneOf`` parts are read within their siblings (a branch sees the properties
  next to it). ``oneOf`` becomes ``anyOf`` after making branches that might overlap disjoint where
  that is safe (a property with disjoint enums becomes required, or an optional property that
  another branch requires is left out); a branch whose values always meet another is dropped;
  the reply is validated. ``if``/``then``/``else`` and ``not`` are applied as far as
  :mod:`~llmrun.backends.local.schema_conditions` can say exactly.
* Untyped nodes (``{}``, ``true``) are any JSON value nested at most :data:`ANY_DEPTH` deep.
  Nodes without ``type`` but with keywords of one type (``properties``, ``minLength``...)
  take the types their keywords name.
* Objects: ``additionalProperties``/``patternProperties``/``propertyNames`` are kept; an object
  with ``properties`` and no ``additionalProperties`` gets no other keys; one without
  ``properties`` gets free keys. A ``required`` key the schema never defines is added with the
  schema its extra keys allow; ``dependentRequired``/``dependencies`` are met by leaving out
  optional trigger keys.
* Numbers: a ``multipleOf`` on ``number`` becomes an integer multiple (or the enum of the few
  multiples in range); integers keep it (xgrammar enforces it).
* Strings: ``format`` becomes a pattern (:mod:`~llmrun.backends.local.schema_formats`);
  patterns, which JSON Schema matches anywhere in the string, are anchored with ``.*`` where
  they are not anchored, since the grammar matches whole strings.
* ``uniqueItems`` on items from a few values (enum, booleans) allows one item (it would
  repeat otherwise).
* Integers stay within 64 bits (all the grammar engine writes); a ``pattern`` next to a
  ``maxLength`` is fitted to it where it can be.
* Left to the reply's validation: ``contains``, other ``uniqueItems``, ``dependentSchemas`` on a
  required key, the ``not`` and ``if`` forms not listed there, ``minLength`` next to a ``pattern``.
"""

from __future__ import annotations

import json
import math
from fractions import Fraction
from typing import Any

from llmrun.backends.local.schema_atoms import (
    Atom,
    Atoms,
    any_atoms,
    to_schema,
)
from llmrun.backends.local.schema_conditions import apart, conditional, implies, negate
from llmrun.backends.local.schema_keywords import (
    clean_number,
    integer_bounds,
    is_format_pattern,
    lower_bound,
    search,
    string_atom,
    upper_bound,
)
from llmrun.backends.local.schema_patterns import anchor_pattern
from llmrun.errors import SchemaError, UnsupportedFeatureError
from llmrun.json_schema import SchemaDocument, check_json_schema, is_finite_number

#: How many times a path may enter the same ``$ref`` (a recursive type is unrolled this deep).
REF_DEPTH = 3
#: After this many ``$ref`` followed, a recursive ``$ref`` is no longer entered again.
WIDE_REF_VISITS = 2000
#: A recursive schema whose plain form is longer than this (JSON characters) is not unrolled.
MAX_PLAIN_CHARS = 400_000
#: Past this many merges, ``if``/``then``/``else`` are left to the reply's validation (they multiply
#: the alternatives of a schema that chains many of them).
MAX_CONDITIONAL_MERGES = 10_000
#: The most ``$ref`` a schema may follow when inlined.
MAX_REF_VISITS = 50000
#: The most alternatives a node may have after merging ``allOf``/``anyOf``/type lists.
MAX_ATOMS = 64
#: A ``number`` with ``multipleOf`` becomes the enum of its multiples when there are at most this many.
MAX_ENUM_MULTIPLES = 64

_TYPE_KEYWORDS = {
    "object": ("properties", "required", "additionalProperties", "patternProperties", "propertyNames",
               "minProperties", "maxProperties", "dependentRequired", "dependencies"),
    "array": ("items", "prefixItems", "additionalItems", "minItems", "maxItems", "uniqueItems", "contains"),
    "string": ("minLength", "maxLength", "pattern", "format"),
    "number": ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"),
}  # fmt: skip
_REF_KEYS = ("$ref", "$dynamicRef", "$recursiveRef")


def normalize_schema(schema: Any, document: SchemaDocument | None = None) -> dict[str, Any]:
    """The plain form of ``schema`` (see the module docstring); raises when no value can satisfy it."""
    document = document or check_json_schema(schema)
    # if/then/else that multiply the alternatives are left to the reply's validation; a recursive
    # schema that inlines too big is not unrolled at all
    too_many_refs = 0
    for depth, conditions in ((REF_DEPTH, True), (REF_DEPTH, False), (1, True), (1, False)):
        if depth == too_many_refs:
            continue
        normalizer = _Normalizer(document, depth, conditions)
        try:
            atoms = normalizer.atoms(document.schema, document.resolver(), ())
        except _OvergrownError:
            too_many_refs = depth if normalizer.visits > MAX_REF_VISITS else 0
            continue
        if not atoms:
            why = "; ".join(dict.fromkeys(normalizer.dropped)) or "its keywords contradict each other"
            raise SchemaError(f"no JSON value can be generated for this schema: {why}")
        out = to_schema(atoms)
        if len(json.dumps(out)) <= MAX_PLAIN_CHARS or normalizer.recursion_cut == 0 or depth == 1:
            return out if isinstance(out, dict) else {"anyOf": []}
    raise UnsupportedFeatureError(
        f"the schema grows past {MAX_REF_VISITS} subschemas when its $ref are inlined; simplify it"
    )


class _OvergrownError(Exception):
    """Past :data:`MAX_CONDITIONAL_MERGES` merges (with conditions) or :data:`MAX_REF_VISITS` refs."""


class _Normalizer:
    def __init__(self, document: SchemaDocument, ref_depth: int = REF_DEPTH, conditions: bool = True) -> None:
        self.document = document
        self.ref_depth = ref_depth
        self.conditions = conditions  # apply if/then/else (else: left to the reply's validation)
        self.merges = 0
        self.recursion_cut = 0  # recursive $ref not entered again
        self.dropped: list[str] = []  # why alternatives were left out, for the error when none remain
        self.visits = 0  # $ref followed so far

    # ----------------------------------------------------------------- nodes
    def atoms(
        self,
        node: Any,
        resolver: Any,
        refs: tuple[str, ...],
        base: Atoms | None = None,
        *,
        entered: bool = False,
    ) -> Atoms:
        """The alternatives ``node`` allows; within ``base`` (what its siblings allow) when given.

        ``entered``: ``resolver`` is already at ``node``'s own ``$id`` (a ref's target).
        """
        if node is True or node == {}:
            return any_atoms() if base is None else list(base)
        if node is False:
            self.dropped.append("a subschema is false")
            return []
        if not isinstance(node, dict):
            raise SchemaError(f"a subschema must be an object or a boolean, got {node!r}")
        if not entered:
            resolver = self.document.entered(node, resolver)
        out = base
        parts = [self.own_atoms(node, resolver, refs)]
        parts += [self.ref(node[k], resolver, refs) for k in _REF_KEYS if isinstance(node.get(k), str)]
        for part in parts:
            if part is not None:
                out = part if out is None else self.intersect(out, part)
        for sub in node.get("allOf") or ():  # each part within the others: conditions see their siblings
            out = self.atoms(sub, resolver, refs, out)
        if "anyOf" in node:
            out = [a for sub in node["anyOf"] for a in self.atoms(sub, resolver, refs, out)]
        if "oneOf" in node:
            subs = node["oneOf"]
            out = self.one_of([self.atoms(sub, resolver, refs, out) for sub in subs], subs)
        out = any_atoms() if out is None else out
        if "if" in node and self.conditions:
            out = conditional(self, node, out, resolver, refs)
        if "not" in node:
            out = negate(self, out, node["not"], exact=False)
        return out

    def ref(self, ref: str, resolver: Any, refs: tuple[str, ...]) -> Atoms:
        from referencing.exceptions import Unresolvable

        try:
            resolved = resolver.lookup(ref)
        except Unresolvable as exc:
            raise SchemaError(f"output_schema has a $ref {ref!r} that cannot be resolved ({exc})") from None
        key = f"{id(resolved.contents)}"
        self.visits += 1
        if self.visits > MAX_REF_VISITS:
            raise _OvergrownError
        # a wide recursive schema is unrolled less deep, so that inlining stays small
        depth = self.ref_depth if self.visits <= WIDE_REF_VISITS else 1
        if refs.count(key) >= depth:
            self.recursion_cut += 1
            self.dropped.append(f"the $ref {ref!r} is recursive and was unrolled {depth} levels deep")
            return []
        return self.atoms(resolved.contents, resolved.resolver, (*refs, key), entered=True)

    def own_atoms(self, node: dict[str, Any], resolver: Any, refs: tuple[str, ...]) -> Atoms | None:
        """The alternatives ``type``/``enum``/``const`` and the type keywords allow; None: no constraint."""
        if "const" in node or "enum" in node:
            values = [node["const"]] if "const" in node else list(node["enum"] or ())
            kept = [v for v in values if self.document.is_valid(v, node)]
            if not kept:
                self.dropped.append("no enum/const value satisfies the rest of its schema")
            return [{"enum": kept}] if kept else []
        kind = node.get("type")
        if isinstance(kind, str):
            types = [kind]
        elif isinstance(kind, list):
            types = [str(t) for t in kind]
        else:  # untyped: the types its keywords name, else any JSON value
            named = [t for t, keys in _TYPE_KEYWORDS.items() if any(k in node for k in keys)]
            if not named:
                return None
            types = named
        if "number" in types and "integer" in types:
            types.remove("integer")
        out: Atoms = []
        for t in types:
            atom = self.typed(t, node, resolver, refs)
            if atom is not None:
                out.append(atom)
        return out

    def typed(self, kind: str, node: dict[str, Any], resolver: Any, refs: tuple[str, ...]) -> Atom | None:
        if kind in ("null", "boolean"):
            return {"type": kind}
        if kind in ("integer", "number"):
            return self.number(kind, node)
        if kind == "string":
            return string_atom(node)
        if kind == "array":
            return self.array(node, resolver, refs)
        if kind == "object":
            return self.object(node, resolver, refs)
        raise SchemaError(f"unknown JSON type {kind!r}")

    def number(self, kind: str, node: dict[str, Any]) -> Atom | None:
        atom: Atom = {"type": kind}
        lo, lo_open = lower_bound(node)
        hi, hi_open = upper_bound(node)
        step = node.get("multipleOf")
        if lo is not None:
            atom["exclusiveMinimum" if lo_open else "minimum"] = lo
        if hi is not None:
            atom["exclusiveMaximum" if hi_open else "maximum"] = hi
        if is_finite_number(step) and step > 0:
            if (
                kind == "number"
                and lo is not None
                and hi is not None
                and (hi - lo) / step <= MAX_ENUM_MULTIPLES
            ):
                first = math.ceil(lo / step)
                values = [clean_number(k * step) for k in range(first, math.floor(hi / step) + 1)]
                kept = [v for v in values if self.document.is_valid(v, {**atom, "multipleOf": step})]
                return {"enum": kept} if kept else self._drop("no multiple of multipleOf in range")
            frac = Fraction(str(step))
            atom["type"] = "integer"  # multiples p/q that are integers: the multiples of p
            if frac.numerator > 1:
                atom["multipleOf"] = frac.numerator
        if atom["type"] == "integer":
            return integer_bounds(atom) or self._drop("an integer range holds no integer")
        return atom

    def array(self, node: dict[str, Any], resolver: Any, refs: tuple[str, ...]) -> Atom | None:
        atom: Atom = {"type": "array"}
        items, prefix = node.get("items"), node.get("prefixItems")
        if isinstance(items, list):  # draft 4-2019: items as a list, additionalItems for the rest
            prefix, items = items, node.get("additionalItems", True)
        lo, hi = int(node.get("minItems", 0)), node.get("maxItems")
        if isinstance(prefix, list):
            atom["prefixItems"] = []
            for i, sub in enumerate(prefix):
                subatoms = self.atoms(sub, resolver, refs)
                if not subatoms:  # no value fits here: the array must end before it
                    hi = i if hi is None else min(int(hi), i)
                    break
                atom["prefixItems"].append(subatoms)
        rest = self.atoms(items if items is not None else True, resolver, refs)
        need = int(node.get("minContains", 1))
        if "contains" in node and rest and need > 0 and not prefix and "maxContains" not in node:
            # the first items are ones that ``contains`` asks for (a tightening: they lead)
            first = self.intersect(rest, self.atoms(node["contains"], resolver, refs))
            if not first:
                return self._drop("no array item can satisfy contains")
            atom["prefixItems"], lo = [first] * need, max(lo, need)
        if not rest:
            count = len(atom.get("prefixItems", ()))
            hi = count if hi is None else min(int(hi), count)
            atom["items"] = False
        else:
            atom["items"] = rest
        if hi is not None:
            if int(hi) < lo:
                return self._drop("an array's minItems exceeds what its items allow")
            atom["maxItems"] = int(hi)
        if lo:
            atom["minItems"] = lo
        if node.get("uniqueItems") is True:
            atom["uniqueItems"] = True
            few = all("enum" in a or a.get("type") in ("boolean", "null") for a in rest or [{}])
            if few and not atom.get("prefixItems") and lo <= 1:
                # items from a few values would often repeat: one item is always unique (a tightening)
                atom["maxItems"] = min(atom.get("maxItems", 1), 1)
        return atom

    def object(self, node: dict[str, Any], resolver: Any, refs: tuple[str, ...]) -> Atom | None:
        atom: Atom = {"type": "object", "properties": {}}
        required = [str(k) for k in node.get("required") or () if isinstance(k, str)]
        for key in ("additionalProperties", "unevaluatedProperties"):
            if key in node:
                atom["additionalProperties"] = self.atoms(node[key], resolver, refs) or False
                break
        patterns = node.get("patternProperties") or {}
        if patterns:
            atom["patternProperties"] = {
                anchor_pattern(p): self.atoms(s, resolver, refs) for p, s in patterns.items()
            }
        if isinstance(node.get("propertyNames"), dict):
            names = string_atom(node["propertyNames"])
            if names is not None and len(names) > 1:
                atom["propertyNames"] = names
        for key in ("minProperties", "maxProperties"):
            if is_finite_number(node.get(key)):
                atom[key] = int(node[key])
        props: dict[str, Any] = node.get("properties") or {}
        for name, sub in props.items():
            if name in required or not self._forbidden_optional(node, name):
                atom["properties"][name] = self.atoms(sub, resolver, refs)
        for name in required:  # a required key the schema never defines: the schema extra keys get
            if name not in atom["properties"]:
                atom["properties"][name] = self.extra_schema(atom, name)
        atom["required"] = list(dict.fromkeys(required))
        return self._settle(atom)

    def _forbidden_optional(self, node: dict[str, Any], name: str) -> bool:
        """Whether the optional key ``name`` is left out to keep a dependency keyword true."""
        deps = {**(node.get("dependencies") or {}), **(node.get("dependentRequired") or {})}
        deps.update(node.get("dependentSchemas") or {})
        return name in deps and name not in (node.get("required") or ())

    def extra_schema(self, atom: Atom, name: str) -> Atoms:
        if name in atom.get("forbidden", ()):
            return []
        matched = [s for p, s in atom.get("patternProperties", {}).items() if search(p, name)]
        if matched:
            out: Atoms = matched[0]
            for more in matched[1:]:
                out = self.intersect(out, more)
            return out
        extra = atom.get("additionalProperties")
        if extra is False:
            self.dropped.append(f"the required key {name!r} is forbidden by additionalProperties: false")
            return []
        return any_atoms() if extra is None else list(extra)

    def _settle(self, atom: Atom) -> Atom | None:
        """Drop optional properties that no value fits; refuse the atom when a required one has none."""
        patterns = atom.get("patternProperties") or {}
        if not all(patterns.values()):  # keys of a pattern no value fits: none, and no other extra keys
            atom["patternProperties"] = {p: v for p, v in patterns.items() if v}
            atom["additionalProperties"] = False
            if not atom["patternProperties"]:
                del atom["patternProperties"]
        for name, sub in list(atom["properties"].items()):
            if not sub:
                if name in atom["required"]:
                    return self._drop(f"the required property {name!r} has no possible value")
                del atom["properties"][name]
        lo, hi = atom.get("minProperties", 0), atom.get("maxProperties")
        if hi is not None and (len(atom["required"]) > hi or lo > hi):
            return self._drop("maxProperties is smaller than the required properties")
        closed = atom.get("additionalProperties") is False and not atom.get("patternProperties")
        if closed and lo > len(atom["properties"]):
            return self._drop("minProperties exceeds the properties an object without extra keys has")
        if not atom["properties"]:
            del atom["properties"]
        if not atom["required"]:
            del atom["required"]
        return atom

    def _drop(self, why: str) -> Atom | None:
        """Record why an alternative is left out; returns None (no atom)."""
        self.dropped.append(why)
        return None

    # ----------------------------------------------------------------- combining
    def intersect(self, left: Atoms, right: Atoms) -> Atoms:
        anything = any_atoms()  # any value (nested ANY_DEPTH deep): the other side as it is, not cut
        if left == anything or right == anything:
            return list(right if left == anything else left)
        out = [m for a in left for b in right if (m := self.merge(a, b)) is not None]
        if len(out) > MAX_ATOMS:
            raise UnsupportedFeatureError(
                f"allOf/anyOf/oneOf here combine into {len(out)} alternatives (more than {MAX_ATOMS}); "
                "simplify the schema"
            )
        return out

    def merge(self, a: Atom, b: Atom) -> Atom | None:
        self.merges += 1
        if self.conditions and self.merges > MAX_CONDITIONAL_MERGES:
            raise _OvergrownError
        if "enum" in a or "enum" in b:
            values, other = (a, b) if "enum" in a else (b, a)
            kept = [v for v in values["enum"] if "enum" not in other or v in other["enum"]]
            kept = [v for v in kept if "enum" in other or self.document.is_valid(v, to_schema([other]))]
            return {"enum": kept} if kept else self._drop("enum values contradict the other keywords")
        ta, tb = a["type"], b["type"]
        if ta != tb and {ta, tb} != {"integer", "number"}:
            return None
        out: Atom = {**a, **b, "type": "integer" if "integer" in (ta, tb) else ta}
        for key in ("minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties"):
            if key in a and key in b:
                out[key] = max(a[key], b[key])
        for key in ("maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties"):
            if key in a and key in b:
                out[key] = min(a[key], b[key])
        if "multipleOf" in a and "multipleOf" in b:
            out["multipleOf"] = math.lcm(int(a["multipleOf"]), int(b["multipleOf"]))
        if "pattern" in a and "pattern" in b and a["pattern"] != b["pattern"]:
            explicit = [x["pattern"] for x in (a, b) if not is_format_pattern(x["pattern"])]
            if len(explicit) == 1:  # a format's pattern and a pattern: the pattern, as next to each other
                out["pattern"] = explicit[0]
            else:
                raise UnsupportedFeatureError(
                    f"allOf combines two different string patterns ({a['pattern']!r} and {b['pattern']!r}), "
                    "which the grammar cannot intersect; write one pattern"
                )
        if out["type"] == "array":
            return self._merge_arrays(a, b, out)
        if out["type"] == "object":
            return self._merge_objects(a, b, out)
        if out["type"] == "integer":
            return integer_bounds(out) or self._drop("an integer range holds no integer")
        return out

    def _merge_arrays(self, a: Atom, b: Atom, out: Atom) -> Atom | None:
        pa, pb = a.get("prefixItems", []), b.get("prefixItems", [])
        ia, ib = a.get("items", any_atoms()), b.get("items", any_atoms())
        prefix = []
        for i in range(max(len(pa), len(pb))):
            x = pa[i] if i < len(pa) else ia
            y = pb[i] if i < len(pb) else ib
            both = self.intersect(x or [], y or [])
            if not both:
                out["maxItems"] = min(out.get("maxItems", i), i)
                break
            prefix.append(both)
        if prefix:
            out["prefixItems"] = prefix
        items = self.intersect(ia or [], ib or [])
        out["items"] = items or False
        if not items:
            out["maxItems"] = min(out.get("maxItems", len(prefix)), len(prefix))
        if out.get("minItems", 0) > out.get("maxItems", math.inf):
            return self._drop("allOf asks for more array items than its items allow")
        return out

    def _merge_objects(self, a: Atom, b: Atom, out: Atom) -> Atom | None:
        props: dict[str, Atoms] = {}
        for name in dict.fromkeys([*a.get("properties", {}), *b.get("properties", {})]):
            x = a.get("properties", {}).get(name) or self.extra_schema(a, name)
            y = b.get("properties", {}).get(name) or self.extra_schema(b, name)
            props[name] = self.intersect(x, y)
        out["properties"] = props
        out["required"] = list(dict.fromkeys([*a.get("required", ()), *b.get("required", ())]))
        if "forbidden" in a or "forbidden" in b:
            out["forbidden"] = list(dict.fromkeys([*a.get("forbidden", ()), *b.get("forbidden", ())]))
        ea, eb = a.get("additionalProperties"), b.get("additionalProperties")
        if ea is False or eb is False:
            out["additionalProperties"] = False
        elif ea is not None and eb is not None:
            out["additionalProperties"] = self.intersect(ea, eb) or False
        if "patternProperties" in a and "patternProperties" in b:
            out["patternProperties"] = {**a["patternProperties"], **b["patternProperties"]}
        return self._settle(out)

    def one_of(self, branches: list[Atoms], subs: list[Any]) -> Atoms:
        """The union of ``branches``, each tightened so that it cannot match another where that is safe.

        Each is kept apart from the others as the schema writes them (not as tightened here: a
        value outside a tightened branch may still be valid for the branch itself).
        """
        branches = [
            [self._apart_all(atom, [b for j, b in enumerate(branches) if j != i]) for atom in branch]
            for i, branch in enumerate(branches)
        ]
        out: Atoms = []
        for i, branch in enumerate(branches):
            others = [sub for j, sub in enumerate(subs) if i != j]
            checked = self.document.format_checker.checkers
            if any(implies(a, sub, checked) for a in branch for sub in others):
                self.dropped.append("a oneOf branch's values are always valid for another branch too")
                branch = [a for a in branch if not any(implies(a, sub, checked) for sub in others)]
            out += branch
        return out

    @staticmethod
    def _apart_all(atom: Atom, others: list[Atoms]) -> Atom:
        for other in others:
            atom = apart(atom, other)
        return atom
