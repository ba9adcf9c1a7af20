"""``not``, ``if``/``then``/``else`` and ``oneOf`` for the normalizer: what a failing subschema leaves.

The normalizer (:mod:`~llmrun.backends.local.schema_normalize`) works on *atoms* (one type with
its keywords, or an enum). Here:

* :func:`negate` keeps the alternatives whose values fail a subschema. It understands the forms
  real schemas use: ``{}``/``true``/``false``, ``type``, ``enum``/``const``, ``required``,
  ``properties`` (with ``required`` and ``type: object``), ``anyOf``/``allOf`` of those. With
  ``exact`` it returns a subset that surely fails the subschema (what ``if``/``else`` needs);
  without, a form it cannot express leaves the alternatives as they are, and the validation
  of every reply catches the rest (``not``).
* :func:`conditional` writes ``if``/``then``/``else`` as ``(if and then) or (not-if and else)``,
  the second part only where :func:`negate` can say it exactly; when neither part is left
  (an ``if`` it cannot negate whose ``then`` contradicts the rest) the keywords are left to
  the reply's validation.
* :func:`apart` tightens a ``oneOf`` branch so that no value of it is valid for another branch:
  a property both branches name with disjoint values (enums, types, a nested required key)
  becomes required (a discriminator), else an optional key the other branch requires is left
  out. :func:`implies` finds the branches whose values always meet another (dropped).

These read the other branch as normalized, which can be tighter than the schema's (an untyped
node with ``properties`` is read as an object): where that lets a reply meet two branches, the
reply's validation rejects it; it never lets an invalid reply through.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from llmrun.backends.local.schema_atoms import Atom, Atoms, to_schema
from llmrun.backends.local.schema_keywords import integer_bounds, lower_bound, search, upper_bound
from llmrun.json_schema import is_finite_number

if TYPE_CHECKING:
    from llmrun.backends.local.schema_normalize import _Normalizer

#: Keywords that never make a value fail (annotations and identifiers).
ANNOTATIONS = frozenset(
    {"title", "description", "$comment", "examples", "default", "deprecated", "readOnly", "writeOnly",
     "$id", "id", "$schema", "$anchor", "contentEncoding", "contentMediaType", "nullable"}
)  # fmt: skip


def negate(n: _Normalizer, atoms: Atoms, negated: Any, exact: bool) -> Atoms:
    """The alternatives of ``atoms`` (narrowed) whose values fail ``negated`` (see the module docstring)."""
    out = _negate(n, atoms, negated, exact)
    if out is None:
        return [] if exact else atoms
    return out


def _negate(n: _Normalizer, atoms: Atoms, negated: Any, exact: bool) -> Atoms | None:
    if negated is True:
        return []
    if negated is False:
        return atoms
    if not isinstance(negated, dict):
        return None
    keys = set(negated) - ANNOTATIONS
    if not keys:
        return []
    # enum alternatives: keep the values the validator says fail ``negated`` (exact for every form)
    enums = [{"enum": kept} for a in atoms if "enum" in a if (kept := _failing(n, a["enum"], negated))]
    typed = [a for a in atoms if "enum" not in a]
    if keys == {"anyOf"}:
        out: Atoms | None = typed
        for branch in negated["anyOf"]:
            out = _negate(n, out, branch, exact) if out is not None else None
        return None if out is None else enums + out
    if keys == {"allOf"}:
        parts = [_negate(n, typed, branch, exact) for branch in negated["allOf"]]
        if all(p is None for p in parts):
            return None
        return enums + [a for p in parts if p for a in p]
    if keys == {"propertyNames"}:  # fails where some key fails it: objects with such a required key
        names = negated["propertyNames"]
        return enums + [
            a
            for a in typed
            if a["type"] == "object" and any(not n.document.is_valid(k, names) for k in a.get("required", ()))
        ]
    if keys == {"type"}:
        return enums + [k for a in typed if (k := _not_type(a, negated["type"], exact)) is not None]
    if keys <= {"enum", "const"}:
        bad = [negated["const"]] if "const" in negated else list(negated.get("enum") or ())
        return enums + [k for a in typed if (k := _not_values(n, a, bad, exact)) is not None]
    if keys <= {"properties", "required", "type"} and negated.get("type", "object") == "object":
        out = enums + [v for a in typed for v in _not_object(n, a, negated)]
        if not out and typed and not exact:
            return None  # nothing it can say exactly: leave it to the validation
        return out
    if len(keys) == 1 and (key := next(iter(keys))) in _BOUNDS and is_finite_number(negated[key]):
        return enums + [k for a in typed if (k := _not_bound(a, key, negated[key], exact)) is not None]
    if len(keys) > 1:  # a conjunction fails where one of its parts fails
        grouped = {"properties", "required", "type"} & keys
        conjuncts = [{k: negated[k] for k in grouped}] if grouped else []
        conjuncts += [{k: negated[k]} for k in sorted(keys - grouped)]
        return _negate(n, atoms, {"allOf": conjuncts}, exact)
    return None


#: A bound -> (the type it applies to, the keyword of the values outside it, the shift of the bound).
_BOUNDS: dict[str, tuple[str, str, int]] = {
    "minProperties": ("object", "maxProperties", -1), "maxProperties": ("object", "minProperties", 1),
    "minItems": ("array", "maxItems", -1), "maxItems": ("array", "minItems", 1),
    "minLength": ("string", "maxLength", -1), "maxLength": ("string", "minLength", 1),
    "minimum": ("number", "exclusiveMaximum", 0), "maximum": ("number", "exclusiveMinimum", 0),
    "exclusiveMinimum": ("number", "maximum", 0), "exclusiveMaximum": ("number", "minimum", 0),
}  # fmt: skip


def _not_bound(atom: Atom, key: str, value: float, exact: bool) -> Atom | None:
    """The values of ``atom`` outside the bound ``{key: value}``; None when there are none."""
    kind, outside, shift = _BOUNDS[key]
    if atom["type"] != kind and not (kind == "number" and atom["type"] == "integer"):
        return None  # the bound does not apply: every value satisfies it
    if kind == "string" and "pattern" in atom:
        return None if exact else atom  # the grammar does not count a pattern's characters
    out = {**atom}
    bound = value + shift
    if kind == "number":
        out[outside] = (
            bound if outside not in out else (max if "inimum" in outside else min)(out[outside], bound)
        )
        if atom["type"] == "integer":
            return integer_bounds(out)
        lo, lo_open = lower_bound(out)
        hi, hi_open = upper_bound(out)
        if lo is not None and hi is not None and (lo > hi or (lo == hi and (lo_open or hi_open))):
            return None
        return out
    lo_key, hi_key = _COUNTS[kind]
    if outside == hi_key:
        out[hi_key] = int(min(out.get(hi_key, bound), bound))
    else:
        out[lo_key] = int(max(out.get(lo_key, 0), bound))
    if out.get(lo_key, 0) > out.get(hi_key, math.inf) or out.get(hi_key, 0) < 0:
        return None
    if kind == "object" and len(out.get("required", ())) > out.get(hi_key, math.inf):
        return None
    return out


_COUNTS = {"object": ("minProperties", "maxProperties"), "array": ("minItems", "maxItems"),
           "string": ("minLength", "maxLength")}  # fmt: skip


def _failing(n: _Normalizer, values: list[Any], negated: dict[str, Any]) -> list[Any]:
    return [v for v in values if n.document.is_valid(v, {"not": negated})]


def _not_type(atom: Atom, kind: Any, exact: bool) -> Atom | None:
    kinds = {kind} if isinstance(kind, str) else set(kind)
    t = atom["type"]
    if t in kinds or (t == "integer" and "number" in kinds):
        return None
    if t == "number" and "integer" in kinds and exact:
        return None  # the grammar cannot leave whole numbers out
    return atom


def _not_values(n: _Normalizer, atom: Atom, bad: list[Any], exact: bool) -> Atom | None:
    if atom["type"] in ("boolean", "null"):
        values = [True, False] if atom["type"] == "boolean" else [None]
        kept = _failing(n, values, {"enum": bad})
        return {"enum": kept} if kept else None
    schema = to_schema([atom])
    if exact and any(n.document.is_valid(b, schema) for b in bad):
        return None  # a value the grammar cannot leave out fits the alternative
    return atom


def _not_object(n: _Normalizer, atom: Atom, negated: dict[str, Any]) -> Atoms:
    """Objects of ``atom`` failing ``{properties, required, type: object}``: a key missing or a bad value."""
    if atom["type"] != "object":
        return [atom] if negated.get("type") == "object" else []  # ``properties`` holds for non-objects
    out: Atoms = []
    for key in negated.get("required") or ():
        slim = without(atom, str(key))
        if slim is not None:
            out.append(slim)
    props: dict[str, Any] = atom.get("properties") or {}
    for key, sub in (negated.get("properties") or {}).items():
        current = props.get(key) or n.extra_schema(atom, key)
        failing = _negate(n, current, sub, exact=True)
        if failing:
            required = list(dict.fromkeys([*atom.get("required", ()), key]))
            out.append({**atom, "properties": {**props, key: failing}, "required": required})
    return out


def without(atom: Atom, key: str) -> Atom | None:
    """``atom`` with ``key`` surely absent; None when it may not be (required, or an extra key may be it)."""
    if key in atom.get("required", ()):
        return None
    patterns = atom.get("patternProperties") or {}
    if any(search(p, key) for p in patterns):
        return None
    extra = atom.get("additionalProperties")
    props = atom.get("properties") or {}
    rest = {k: v for k, v in props.items() if k != key}
    if extra:  # extra keys of some schema: the key may be one
        return None
    if extra is None and ((not rest and not patterns) or atom.get("minProperties", 0) > len(rest)):
        return None  # free keys once it is gone (see ``to_schema``): the key may come back as one
    if not patterns and atom.get("minProperties", 0) > len(rest):
        return None
    # "forbidden": merges with sibling schemas that name the key give it no value (extra keys
    # stay as the schema says, so siblings' other keys are still allowed)
    out = {**atom, "properties": rest, "forbidden": [*atom.get("forbidden", ()), key]}
    if not rest:
        del out["properties"]
    return out


def conditional(
    n: _Normalizer, node: dict[str, Any], atoms: Atoms, resolver: Any, refs: tuple[str, ...]
) -> Atoms:
    """``atoms`` narrowed by ``node``'s ``if``/``then``/``else`` (see the module docstring)."""
    if "then" not in node and "else" not in node:
        return atoms
    cond = node["if"]
    yes = n.atoms(node.get("then", True), resolver, refs, n.atoms(cond, resolver, refs, atoms))
    no = negate(n, n.atoms(node.get("else", True), resolver, refs, atoms), _resolved(n, cond, resolver), True)
    return (yes + no) or atoms


def _resolved(n: _Normalizer, cond: Any, resolver: Any) -> Any:
    """``cond`` with a lone ``$ref`` followed (forms :func:`negate` reads have no refs)."""
    from referencing.exceptions import Unresolvable

    seen = 0
    while isinstance(cond, dict) and set(cond) - ANNOTATIONS == {"$ref"} and seen < 8:
        try:
            resolved = resolver.lookup(cond["$ref"])
        except Unresolvable:
            return cond  # a form negate does not read: no else part
        cond, resolver, seen = resolved.contents, resolved.resolver, seen + 1
    return cond


def apart(atom: Atom, others: Atoms) -> Atom:
    """``atom`` tightened so that its values fail each object alternative of ``others`` where that is safe."""
    for other in others:
        if atom.get("type") != "object" or other.get("type") != "object":
            continue
        if _already_apart(atom, other):
            continue
        key = _discriminator(atom, other)
        if key is not None:
            if key not in atom.get("required", ()):
                atom = {**atom, "required": [*atom.get("required", ()), key]}
            continue
        for key in other.get("required", ()):
            if key not in atom.get("required", ()):
                slim = without(atom, key)
                if slim is not None:
                    atom = slim
                    break
    return atom


def implies(atom: Atom, sub: Any, checked_formats: Any = ()) -> bool:
    """Whether every value of the alternative ``atom`` surely satisfies the subschema ``sub`` too.

    True only in the plain cases: ``sub`` asks for nothing (``true``, annotations, a ``format``
    the validator does not check, such as ``hostname`` without its optional checker), or for
    nothing but keys (``required``, maybe ``type: object``) that ``atom`` requires as well.
    """
    if sub is True or (isinstance(sub, dict) and not set(sub) - ANNOTATIONS - {"format"}):
        return not isinstance(sub, dict) or sub.get("format") not in checked_formats
    if atom.get("type") != "object" or not isinstance(sub, dict):
        return False
    keys = set(sub) - ANNOTATIONS
    if not keys <= {"required", "type"} or sub.get("type", "object") != "object" or "required" not in keys:
        return False
    return set(sub["required"]) <= set(atom.get("required", ()))


def _closed(atom: Atom) -> bool:
    return atom.get("additionalProperties") is False and not atom.get("patternProperties")


def _already_apart(atom: Atom, other: Atom) -> bool:
    """Whether no object fits both: a key one requires the other (closed) never has, or, when both
    are closed and every key they share has disjoint enums, one of them cannot be empty."""
    if _apart_values(atom, other, 2):
        return True
    mine, theirs = atom.get("properties") or {}, other.get("properties") or {}
    if _closed(other) and any(k not in theirs for k in atom.get("required", ())):
        return True
    if _closed(atom) and any(k not in mine for k in other.get("required", ())):
        return True
    if not (_closed(atom) and _closed(other)):
        return False
    shared = [k for k in mine if k in theirs and not _disjoint_enums(mine[k], theirs[k])]
    nonempty = any(a.get("required") or a.get("minProperties", 0) > 0 for a in (atom, other))
    return not shared and nonempty


def _disjoint_enums(here: Atoms, there: Atoms, depth: int = 2) -> bool:
    """Whether no value fits both: enums with nothing in common, different types, or objects
    that both require a key whose values are disjoint (``depth`` levels down)."""
    if not here or not there:
        return False
    return all(_apart_values(a, b, depth) for a in here for b in there)


def _apart_values(a: Atom, b: Atom, depth: int) -> bool:
    if "enum" in a and "enum" in b:
        return not {_canon(v) for v in a["enum"]} & {_canon(v) for v in b["enum"]}
    if "enum" in a or "enum" in b:
        values, typed = (a["enum"], b) if "enum" in a else (b["enum"], a)
        return all(not _json_type_fits(v, typed["type"]) for v in values)
    if a["type"] != b["type"]:
        return {a["type"], b["type"]} != {"integer", "number"}
    if a["type"] != "object" or depth == 0:
        return False
    props_a, props_b = a.get("properties") or {}, b.get("properties") or {}
    both = set(a.get("required", ())) & set(b.get("required", ()))
    return any(_disjoint_enums(props_a.get(k, []), props_b.get(k, []), depth - 1) for k in both)


def _json_type_fits(value: Any, kind: str) -> bool:
    if kind in ("integer", "number"):
        number = isinstance(value, int | float) and not isinstance(value, bool)
        return number and (kind == "number" or float(value).is_integer())
    names = {"null": type(None), "boolean": bool, "string": str, "array": list, "object": dict}
    return isinstance(value, names[kind])


def _discriminator(atom: Atom, other: Atom) -> str | None:
    """A property both name whose values have nothing in common (enums, types, nested required keys)."""
    mine, theirs = atom.get("properties") or {}, other.get("properties") or {}
    for key, here in mine.items():
        if _disjoint_enums(here, theirs.get(key) or []):
            return str(key)
    return None


def _canon(value: Any) -> str:
    """A key equal for equal JSON scalars (``1`` and ``1.0`` alike, ``true`` apart from ``1``)."""
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, int | float):
        return repr(float(value))
    if isinstance(value, str):
        return "s" + value
    return "[container]"  # arrays and objects: taken as possibly equal to any other (never a discriminator)
