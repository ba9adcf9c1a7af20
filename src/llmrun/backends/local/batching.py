"""Fine-tuning examples as token batches, and the completion-only loss.

Each example becomes ``prompt tokens + completion tokens + EOS``; the prompt
positions are masked out of the loss. The prompt is tokenized exactly as at
generation time, so what the model learns is what it will see when asked.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812

from llmrun.errors import TrainingError
from llmrun.training import TrainingExample

log = logging.getLogger("llmrun.training")

IGNORE_INDEX = -100

#: Architectures whose causal-LM logits are exactly ``lm_head(decoder(x))``: for
#: them the loss runs the output layer on the completion positions only.
_PLAIN_HEAD_MODEL_TYPES = frozenset(
    {"gpt_neox", "llama", "mistral", "qwen2", "qwen3", "gpt2", "opt", "phi3", "olmo", "olmo2", "stablelm"}
)


@dataclass(frozen=True)
class EncodedExample:
    """Token ids of one example; the first ``num_prompt`` positions are not learned."""

    input_ids: tuple[int, ...]
    num_prompt: int

    @property
    def num_targets(self) -> int:
        """How many tokens the loss is computed on."""
        return len(self.input_ids) - self.num_prompt


@dataclass(frozen=True)
class Batch:
    """A right-padded batch: ``input_ids``, ``attention_mask`` and ``labels`` are [B, S]."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    num_tokens: int  # non-padding tokens
    num_targets: int  # tokens the loss is computed on (labels shifted by one)

    def to(self, device: torch.device) -> Batch:
        """The batch on ``device``."""
        if self.input_ids.device == device:
            return self
        return Batch(
            self.input_ids.to(device, non_blocking=True),
            self.attention_mask.to(device, non_blocking=True),
            self.labels.to(device, non_blocking=True),
            self.num_tokens,
            self.num_targets,
        )


def eos_id(tokenizer: Any) -> int | None:
    """The tokenizer's end-of-sequence id, or None."""
    value = getattr(tokenizer, "eos_token_id", None)
    return value if isinstance(value, int) else None


def pad_id(tokenizer: Any) -> int:
    """The id used for padding: the pad token, else EOS, else 0 (always masked out)."""
    for value in (getattr(tokenizer, "pad_token_id", None), eos_id(tokenizer)):
        if isinstance(value, int):
            return value
    return 0


def encode_examples(
    tokenizer: Any, examples: Sequence[TrainingExample], max_length: int
) -> list[EncodedExample]:
    """Tokenize ``examples``; examples longer than ``max_length`` lose the end of their completion.

    An example whose prompt alone fills ``max_length`` is dropped with a warning;
    when none is left, :class:`~llmrun.errors.TrainingError` says to raise ``max_length``.
    """
    if not examples:
        return []
    eos = eos_id(tokenizer)
    prompts = [e.prompt for e in examples]
    fulls = [e.prompt + e.target for e in examples]
    prompt_ids: list[list[int]] = tokenizer(prompts, add_special_tokens=True)["input_ids"]
    full_ids: list[list[int]] = tokenizer(fulls, add_special_tokens=True)["input_ids"]
    encoded: list[EncodedExample] = []
    truncated = dropped = 0
    for example, p_ids, f_ids in zip(examples, prompt_ids, full_ids, strict=True):
        if len(f_ids) > len(p_ids) and f_ids[: len(p_ids)] == p_ids:
            ids = list(f_ids)
        else:  # the tokenizer merged across the boundary: keep the prompt as generation sees it
            ids = list(p_ids) + list(tokenizer(example.target, add_special_tokens=False)["input_ids"])
        if eos is not None and (not ids or ids[-1] != eos):
            ids.append(eos)
        if len(p_ids) >= max_length:
            dropped += 1
            continue
        if len(ids) > max_length:
            truncated += 1
            ids = ids[:max_length]
        encoded.append(EncodedExample(tuple(ids), len(p_ids)))
    if truncated:
        log.warning(
            "%d example(s) are longer than max_length=%d tokens: their end is cut", truncated, max_length
        )
    if dropped:
        log.warning(
            "%d example(s) were skipped: their prompt alone fills max_length=%d tokens", dropped, max_length
        )
    if not encoded:
        raise TrainingError(
            f"every example's prompt is at least max_length={max_length} tokens long, so nothing is left to "
            "learn; raise max_length or shorten the prompts"
        )
    return encoded


def collate(items: Sequence[EncodedExample], pad: int) -> Batch:
    """Right-pad ``items`` to their longest length (dynamic padding)."""
    width = max(len(e.input_ids) for e in items)
    input_ids = torch.full((len(items), width), pad, dtype=torch.long)  # [B, S]
    attention_mask = torch.zeros((len(items), width), dtype=torch.long)  # [B, S]
    labels = torch.full((len(items), width), IGNORE_INDEX, dtype=torch.long)  # [B, S]
    for row, e in enumerate(items):
        n = len(e.input_ids)
        ids = torch.tensor(e.input_ids, dtype=torch.long)
        input_ids[row, :n] = ids
        attention_mask[row, :n] = 1
        labels[row, e.num_prompt : n] = ids[e.num_prompt :]
    num_tokens = sum(len(e.input_ids) for e in items)
    # Position 0 is never a target (nothing precedes it), even when num_prompt == 0.
    num_targets = sum(len(e.input_ids) - max(e.num_prompt, 1) for e in items)
    return Batch(input_ids, attention_mask, labels, num_tokens, num_targets)


def uses_plain_head(model: Any) -> bool:
    """Whether the completion-only output-layer shortcut is exact for ``model``."""
    config = model.config
    return (
        getattr(config, "model_type", None) in _PLAIN_HEAD_MODEL_TYPES
        and getattr(config, "final_logit_softcapping", None) is None
        and getattr(config, "logit_scale", None) is None
        and model.get_output_embeddings() is not None
    )


def completion_loss_sum(model: Any, batch: Batch, plain_head: bool) -> torch.Tensor:
    """Summed cross-entropy of the completion tokens of ``batch`` (a 0-d float32 tensor).

    With ``plain_head`` the output layer runs on the target positions only,
    which skips most of the vocabulary projection for prompt and padding tokens.
    """
    targets = batch.labels[:, 1:]  # [B, S-1]
    if plain_head:
        out = model.get_decoder()(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False
        )
        hidden = out.last_hidden_state[:, :-1]  # [B, S-1, H]
        keep = targets != IGNORE_INDEX  # [B, S-1]
        logits = model.get_output_embeddings()(hidden[keep])  # [N, V]
        return F.cross_entropy(logits.float(), targets[keep], reduction="sum")
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)
    logits = out.logits[:, :-1]  # [B, S-1, V]
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(),
        targets.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
