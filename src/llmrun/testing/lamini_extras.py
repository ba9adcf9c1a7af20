"""The fake Lamini's batch completions and embeddings (the 2023 surface's jobs and index use them).

* ``POST /v1/batch_completions`` (``model_name``, ``prompt`` str or list,
  ``output_type``, ``max_new_tokens``) -> ``{"id"}``;
  ``GET /v1/batch_completions/{id}/result`` -> ``{"outputs": [...],
  "finish_reason": [...]}`` with ``None`` reasons for items not done yet
  (``step`` more items are done at each poll; all at once by default);
* ``POST /v1/embedding`` (``prompt`` str or list, ``model_name``) ->
  ``{"embedding": [[float, ...], ...]}``: a hashed bag of words, L2-normalised,
  so texts that share words are near each other.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: Width of the fake embeddings.
EMBEDDING_DIM = 64
_BATCH_RESULT = re.compile(r"^/v1/batch_completions/([\w-]+)/result$")


def fake_embedding(text: str, dim: int = EMBEDDING_DIM) -> list[float]:
    """A deterministic unit vector: each lower-cased word adds 1 at a hashed position."""
    vec = [0.0] * dim
    for word in re.findall(r"\w+", text.lower()):
        vec[int.from_bytes(hashlib.sha256(word.encode()).digest()[:4], "big") % dim] += 1.0
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    return [v / norm for v in vec]


@dataclass
class FakeBatch:
    """One submitted batch: all outputs, and how many are revealed as done."""

    outputs: list[Any]
    done: int = 0


class FakeExtras:
    """Batches and embeddings; :meth:`handle` answers their routes or returns ``None``."""

    def __init__(self) -> None:
        self.batches: dict[str, FakeBatch] = {}
        #: Items revealed per result poll (``None``: all at once).
        self.step: int | None = None
        self._next = 1

    def reset(self) -> None:
        self.batches.clear()
        self.step = None
        self._next = 1

    def handle(
        self, method: str, path: str, body: dict[str, Any], complete: Callable[[dict[str, Any]], Any]
    ) -> tuple[bool, Any]:
        """``(True, reply)`` for a route of this module, else ``(False, None)``."""
        if (method, path) == ("POST", "/v1/embedding"):
            prompt = body.get("prompt")
            texts: list[Any] = prompt if isinstance(prompt, list) else [prompt]
            strings = [t for t in texts if isinstance(t, str)]
            if not texts or len(strings) != len(texts):
                from llmrun.testing.lamini_wire import WireError

                raise WireError(400, "prompt must be a string or a list of strings")
            return True, {"embedding": [fake_embedding(t) for t in strings]}
        if (method, path) == ("POST", "/v1/batch_completions"):
            outputs = complete(body)
            batch_id = f"batch-{self._next}"
            self._next += 1
            self.batches[batch_id] = FakeBatch(outputs if isinstance(outputs, list) else [outputs])
            return True, {"id": batch_id}
        m = _BATCH_RESULT.match(path)
        if m is not None and method == "GET":
            batch = self.batches.get(m.group(1))
            if batch is None:
                from llmrun.testing.lamini_wire import WireError

                raise WireError(404, f"batch {m.group(1)} not found")
            n = len(batch.outputs)
            batch.done = n if self.step is None else min(n, batch.done + self.step)
            reasons = ["stop"] * batch.done + [None] * (n - batch.done)
            return True, {"outputs": batch.outputs, "finish_reason": reasons}
        return False, None
