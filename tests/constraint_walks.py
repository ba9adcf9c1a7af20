"""Drive a JSON constraint the way the decode loop does, without a model (shared by the schema tests).

``walk`` feeds logits to ``mask_logits``, picks the best allowed token, and reads the token
*after* ``advance``, which may replace it in place to keep the reply closable within the budget.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from llmrun.backends.local import grammar
from llmrun.testing.checkpoints import padded_vocab_size

LogitsFor = Callable[[int, int, int], torch.Tensor]  # (step, rows, width) -> [rows, width]


def random_logits(seed: int) -> LogitsFor:
    """Seeded random logits: what a model with random weights writes."""
    gen = torch.Generator().manual_seed(seed)
    return lambda step, rows, width: torch.randn(rows, width, generator=gen)


def walk(
    tokenizer: Any, schema: dict[str, Any], budget: int, rows: int, logits_for: LogitsFor
) -> tuple[list[tuple[str, bool, int]], Any]:
    """Per row (text, finished within the budget, tokens written), and the constraint."""
    width = padded_vocab_size(len(tokenizer))
    constraint = grammar.json_constraint(tokenizer, schema, rows, width, max_new_tokens=budget)
    stop = set(tokenizer.all_special_ids)
    out: list[list[int]] = [[] for _ in range(rows)]
    ended = [False] * rows
    for step in range(budget):
        logits = logits_for(step, rows, width)  # [B, V]
        constraint.mask_logits(logits)
        chosen = logits.argmax(dim=-1)  # [B]
        running = [not (e or f) for e, f in zip(ended, constraint.finished(), strict=True)]
        constraint.advance(chosen)  # may replace a token (in place) to keep the reply closable
        for row in range(rows):
            if running[row]:
                if int(chosen[row]) in stop:
                    ended[row] = True  # a stop token the grammar allows: the value is complete
                else:
                    out[row].append(int(chosen[row]))
        if all(e or f for e, f in zip(ended, constraint.finished(), strict=True)):
            break
    done = [e or f for e, f in zip(ended, constraint.finished(), strict=True)]
    return [(tokenizer.decode(t), d, len(t)) for t, d in zip(out, done, strict=True)], constraint


def random_walks(
    tokenizer: Any, schema: dict[str, Any], budget: int, rows: int, seed: int
) -> list[tuple[str, bool]]:
    """Seeded random walks, one per row: (text, finished within the budget)."""
    results, _ = walk(tokenizer, schema, budget, rows, random_logits(seed))
    return [(text, done) for text, done, _ in results]
