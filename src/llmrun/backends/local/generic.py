"""The generic forward: any transformers causal LM (or one wrapped by e.g. peft) with its own cache,
position ids that account for left padding, and logits of the last position only."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from llmrun.backends.local.forward import Decoder, Session

__all__ = ["GenericSession"]


class GenericSession:
    """The transformers base model (or the whole model) with its own dynamic cache."""

    def __init__(self, dec: Decoder, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> None:
        self.dec = dec
        self.input_ids = input_ids
        self.attention_mask = attention_mask.long()
        self.positions = (self.attention_mask.cumsum(-1) - 1).clamp_min(0)  # [B, S]
        self.cache: Any = _new_cache(dec.model)
        self.can_select_rows = self.cache is not None and hasattr(self.cache, "batch_select_indices")

    def _run(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        kwargs: dict[str, Any] = {
            "input_ids": ids,
            "attention_mask": self.attention_mask,
            "position_ids": positions,
            "use_cache": True,
        }
        if self.cache is not None:
            kwargs[self.dec.cache_kwarg] = self.cache
        if self.dec.head is None:
            if self.dec.logits_to_keep:
                kwargs["logits_to_keep"] = 1
            out = self.dec.model(**kwargs)
            self._keep_cache(out)
            logits: torch.Tensor = out.logits[:, -1].float()
            return logits
        out = self.dec.base(**kwargs)
        self._keep_cache(out)
        return self.dec.head(out.last_hidden_state[:, -1]).float()

    def _keep_cache(self, out: Any) -> None:
        if self.cache is None:
            self.cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)

    def prefill(self) -> torch.Tensor:
        return self._run(self.input_ids, self.positions)

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        ones = self.attention_mask.new_ones((self.attention_mask.shape[0], 1))
        self.attention_mask = torch.cat([self.attention_mask, ones], dim=1)  # [B, S + t]
        self.positions = self.positions[:, -1:] + 1  # [B, 1]
        return self._run(tokens[:, None], self.positions)

    def refine_argmax(self, logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return tokens  # the whole head, always exact

    def join(self, other: Session) -> bool:
        return False  # transformers' caches of different lengths do not concatenate

    def select_rows(self, rows: torch.Tensor) -> None:
        self.cache.batch_select_indices(rows)
        self.attention_mask = self.attention_mask.index_select(0, rows)
        self.positions = self.positions.index_select(0, rows)


def _new_cache(model: Any) -> Any:
    try:
        from transformers import DynamicCache
    except ImportError:  # pragma: no cover - transformers is a dependency of the local backend
        return None
    try:
        return DynamicCache(config=model.config)
    except TypeError:  # transformers 4: no config argument
        return DynamicCache()
