"""The normalizer's alternatives (*atoms*) and the plain JSON Schema they stand for.

An atom is ``{"enum": [...]}`` or one ``type`` with that type's keywords, its nested schemas
held as lists of atoms while the normalizer (:mod:`~llmrun.backends.local.schema_normalize`)
merges them; :func:`to_schema` writes them out.
"""

from __future__ import annotations

from typing import Any

Atom = dict[str, Any]
Atoms = list[Atom]

#: How deep an untyped (Any) value may nest arrays and objects.
ANY_DEPTH = 2


def emit(atoms: Atoms) -> dict[str, Any]:
    """A schema from atoms: the atom itself when there is one, else their ``anyOf``."""
    return atoms[0] if len(atoms) == 1 else {"anyOf": atoms}


def any_atoms(depth: int = ANY_DEPTH) -> Atoms:
    """Any JSON value, arrays and objects nested at most ``depth`` deep."""
    out: Atoms = [{"type": t} for t in ("null", "boolean", "number", "string")]
    if depth > 0:
        inner = any_atoms(depth - 1)
        out += [{"type": "array", "items": inner}, {"type": "object", "additionalProperties": inner}]
    return out


def to_schema(atoms: Atoms) -> dict[str, Any] | bool:
    """Turn nested atom lists into plain JSON Schema (nested schemas are atom lists while merging)."""
    if not atoms:
        return False
    return emit([_atom_schema(a) for a in atoms])


def _atom_schema(atom: Atom) -> dict[str, Any]:
    out = dict(atom)
    forbidden = out.pop("forbidden", None)  # keys left out (a oneOf kept apart): no extra keys
    if out.get("type") == "object" and "additionalProperties" not in out:
        # no word on other keys: none next to named properties (tighter), any where none are named
        named = len(out.get("properties") or ()) + len(out.get("patternProperties") or ())
        free = not forbidden and (not named or out.get("minProperties", 0) > len(out.get("properties") or ()))
        out["additionalProperties"] = any_atoms(ANY_DEPTH - 1) if free else False
    if "properties" in out:
        out["properties"] = {k: to_schema(v) for k, v in out["properties"].items()}
    if "patternProperties" in out:
        out["patternProperties"] = {k: to_schema(v) for k, v in out["patternProperties"].items()}
    if isinstance(out.get("additionalProperties"), list):
        out["additionalProperties"] = to_schema(out["additionalProperties"])
    if isinstance(out.get("items"), list):
        out["items"] = to_schema(out["items"])
    if "prefixItems" in out:
        out["prefixItems"] = [to_schema(p) for p in out["prefixItems"]]
    return out
