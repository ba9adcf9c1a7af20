"""Schema-valid sample values from a JSON Schema, deterministic for a seed.

Used by :class:`~llmrun.testing.FakeRunner` and the fake Lamini server to
answer typed requests without a model.
"""

from __future__ import annotations

import random
from typing import Any

from llmrun.errors import UnsupportedFeatureError

_WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet")


def sample_value(schema: dict[str, Any], rng: random.Random) -> Any:
    """A value valid for ``schema`` (pydantic-style, ``$defs``/``$ref`` resolved against itself)."""
    return _Sampler(schema, rng).value(schema)


class _Sampler:
    def __init__(self, root: dict[str, Any], rng: random.Random) -> None:
        self.defs: dict[str, Any] = root.get("$defs", {})
        self.rng = rng

    def value(self, node: dict[str, Any]) -> Any:
        if "$ref" in node:
            return self.value(self.defs[node["$ref"].rsplit("/", 1)[-1]])
        if "const" in node:
            return node["const"]
        if "enum" in node:
            return self.rng.choice(node["enum"])
        for key in ("anyOf", "oneOf"):
            if key in node:
                return self.value(self.rng.choice(node[key]))
        if "allOf" in node and len(node["allOf"]) == 1:
            return self.value(node["allOf"][0])
        kind = node.get("type")
        if kind == "object":
            props: dict[str, Any] = node.get("properties", {})
            return {name: self.value(sub) for name, sub in props.items()}
        if kind == "array":
            low = node.get("minItems", 0)
            high = max(low, min(node.get("maxItems", 3), low + 3))
            return [self.value(node.get("items", {})) for _ in range(self.rng.randint(max(low, 1), high))]
        if kind == "string":
            return self.string(node)
        if kind in ("integer", "number"):
            return self.number(node, integer=kind == "integer")
        if kind == "boolean":
            return self.rng.random() < 0.5
        if kind == "null":
            return None
        raise UnsupportedFeatureError(f"cannot invent a value for the JSON Schema node {node}")

    def string(self, node: dict[str, Any]) -> str:
        if "pattern" in node:
            raise UnsupportedFeatureError(
                f"the fake cannot invent a string matching the pattern {node['pattern']!r}; "
                "script the response instead (FakeRunner(responses=[...]))"
            )
        low, high = node.get("minLength", 0), node.get("maxLength", 40)
        text = " ".join(self.rng.choice(_WORDS) for _ in range(3))
        while len(text) < low:
            text += " " + self.rng.choice(_WORDS)
        return text[:high] if len(text) > high else text

    def number(self, node: dict[str, Any], integer: bool) -> int | float:
        low = node.get("minimum", node.get("exclusiveMinimum", 0 if "maximum" not in node else None))
        high = node.get("maximum", node.get("exclusiveMaximum"))
        if low is None:
            low = float(high if high is not None else 10) - 10
        if high is None:
            high = low + 10
        if integer:
            lo = int(low) + (1 if "exclusiveMinimum" in node and "minimum" not in node else 0)
            hi = int(high) - (1 if "exclusiveMaximum" in node and "maximum" not in node else 0)
            return self.rng.randint(lo, max(lo, hi))
        # strictly inside the range, so exclusive bounds hold too
        return float(low) + (float(high) - float(low)) * self.rng.uniform(0.1, 0.9)
