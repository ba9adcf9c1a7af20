"""Evaluating a local model on held-out pairs: loss, perplexity, exact match, samples."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from llmrun.backends.local.batching import (
    EncodedExample,
    collate,
    completion_loss_sum,
    encode_examples,
    pad_id,
    uses_plain_head,
)
from llmrun.generation import GenerationConfig
from llmrun.runner import CompletionRequest
from llmrun.training import (
    EvalResult,
    EvalSample,
    TrainingExample,
    TrainOptions,
    completions_match,
    split_examples,
)

if TYPE_CHECKING:
    from llmrun.backends.local.engine import LocalEngine

#: Extra tokens allowed beyond the longest expected answer when decoding for exact match.
_ANSWER_SLACK_TOKENS = 8


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter."""
    return next(model.parameters()).device


def autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager[Any]:
    """bfloat16 autocast on ``device`` when ``bf16``; a no-op otherwise."""
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


@torch.no_grad()
def heldout_loss(
    model: Any, encoded: Sequence[EncodedExample], pad: int, batch_size: int, bf16: bool = False
) -> tuple[float, int]:
    """Mean completion-token cross-entropy over ``encoded`` and the number of tokens it covers."""
    was_training = model.training
    model.eval()
    device = model_device(model)
    plain = uses_plain_head(model)
    total, count = 0.0, 0
    try:
        for start in range(0, len(encoded), batch_size):
            batch = collate(encoded[start : start + batch_size], pad).to(device)
            with autocast(device, bf16):
                total += float(completion_loss_sum(model, batch, plain))
            count += batch.num_targets
    finally:
        model.train(was_training)
    return (total / count if count else math.nan), count


def greedy_generate(engine: LocalEngine, prompts: Sequence[str], max_new_tokens: int) -> list[str]:
    """Greedy completions of ``prompts`` through the engine: its prepared decoder, EOS set and context."""
    request = CompletionRequest(tuple(prompts), GenerationConfig(max_new_tokens=max_new_tokens))
    return [c.text for c in engine.generate(request)]


def evaluate_local(
    engine: LocalEngine,
    examples: Sequence[TrainingExample],
    options: TrainOptions | None = None,
    *,
    split: bool = True,
) -> EvalResult:
    """Evaluate the engine's model on held-out pairs (answers generated through the engine).

    With ``split`` (the default) the held-out part of ``examples`` is used, the
    same split training made with ``options.seed`` and ``options.eval_fraction``;
    when that part is empty every example is used and ``extra["on_training_data"]``
    is True. With ``split=False`` all ``examples`` are evaluated.
    """
    options = options or TrainOptions()
    held = list(examples)
    on_training_data = False
    if split:
        _, held = split_examples(examples, options.eval_fraction, options.seed)
        if not held:
            held, on_training_data = list(examples), True
    model, tokenizer = engine.model, engine.tokenizer
    max_length = min(options.max_length, engine.context_length)
    encoded = encode_examples(tokenizer, held, max_length)
    loss, tokens = heldout_loss(model, encoded, pad_id(tokenizer), options.batch_size, options.bf16)
    perplexity = math.exp(min(loss, 700.0)) if not math.isnan(loss) else None

    exact: float | None = None
    samples: tuple[EvalSample, ...] = ()
    to_decode = held[: options.eval_max_examples]
    if to_decode:
        longest = max(e.num_targets for e in encoded) if encoded else 1
        budget = options.eval_max_new_tokens or longest + _ANSWER_SLACK_TOKENS
        got = greedy_generate(engine, [e.prompt for e in to_decode], budget)
        exact = sum(completions_match(e.completion, g) for e, g in zip(to_decode, got, strict=True)) / len(
            got
        )
        samples = tuple(
            EvalSample(prompt=e.prompt, expected=e.completion, got=g.strip())
            for e, g in zip(to_decode[: options.num_samples], got, strict=False)
        )
    return EvalResult(
        loss=None if math.isnan(loss) else loss,
        perplexity=perplexity,
        exact_match=exact,
        samples=samples,
        num_examples=len(held),
        extra={
            "eval_tokens": tokens,
            "exact_match_examples": len(to_decode),
            "on_training_data": on_training_data,
        },
    )
