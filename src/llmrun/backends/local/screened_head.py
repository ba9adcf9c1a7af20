"""The LM head's exact float32 greedy choice at a quarter of the weight bytes (CPU, few rows).

At one row per step the float32 LM head is the largest single read of a decode step (pythia-70m:
103 MB of 179 MB), and the CPU is bound by memory bandwidth. :class:`ScreenedHead` first
multiplies with an int8 copy of the head (per-output-channel scales, :mod:`.quantize`'s kernel),
bounds each logit's error from the quantization step, the bfloat16 rounding of the input and of
the output, then recomputes in float32, from the model's own weight rows, only the candidates that
can still be the largest. Every other logit is ``-inf``. So the argmax equals the float32 head's
argmax (up to the order of float32 additions, as for any other float32 kernel); the other logits
are gone, which is why the decode loop uses it only where nothing but the argmax is read: greedy,
no repetition penalty, no constraint.

The bound, for row ``j`` of the head and input ``x``: ``|exact_j - approx_j| <= scale_j * |x|_1 *
(1/2 + 127.5 * 2^-9 + accumulation) + |approx_j| * 2^-9``; it is applied with a factor of about
two to spare. A candidate is a ``j`` with ``approx_j + err_j >= max_k (approx_k - err_k)``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from llmrun.backends.local.quantize import Int8Linear

__all__ = ["SCREEN_MAX_ROWS", "ScreenedHead", "can_screen"]

#: Rows up to this are screened; for more rows the int8 kernel is no faster than oneDNN's float32.
SCREEN_MAX_ROWS = 4
#: Above this share of candidates the screen saves nothing: the whole head is computed instead.
_MAX_CANDIDATE_SHARE = 1 / 16
_INT8_ERROR = 1.0  # the bound's (1/2 + 127.5 * 2^-9 + accumulation) ~ 0.76, with room to spare
_OUTPUT_ERROR = 2.0**-7  # bfloat16 output rounding, 2^-9, with room to spare


def can_screen(weight: torch.Tensor) -> bool:
    """Whether a head weight ``[V, H]`` can be screened here: float32 on the CPU, H a multiple of 8."""
    return weight.device.type == "cpu" and weight.dtype == torch.float32 and weight.shape[1] % 8 == 0


class ScreenedHead:
    """Logits for the argmax only: exact float32 values where the largest can be, ``-inf`` elsewhere.

    ``full`` computes the exact head (used for more than :data:`SCREEN_MAX_ROWS` rows, or when the
    screen leaves too many candidates). Ids at or past ``vocab_size`` are never candidates.
    """

    def __init__(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        vocab_size: int,
        full: Callable[[torch.Tensor], torch.Tensor],
    ) -> None:
        self.weight = weight.detach()  # [V, H] the model's own float32 rows
        self.bias = None if bias is None else bias.detach()  # [V]
        self.width = int(weight.shape[0])
        self.vocab_size = min(int(vocab_size), self.width)
        self.full = full
        real = torch.nn.Linear(weight.shape[1], self.vocab_size, bias=False)
        real.weight = torch.nn.Parameter(self.weight[: self.vocab_size], requires_grad=False)
        self.screen = Int8Linear([real])  # bias added by hand below, in float32
        self.scale = self.screen.scale.float()  # [V']
        self.max_candidates = max(64, int(self.vocab_size * _MAX_CANDIDATE_SHARE))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``[B, H]`` float32; returns float32 ``[B, V]``."""
        if x.shape[0] > SCREEN_MAX_ROWS:
            return self._full(x)
        approx = self.screen(x)  # [B, V'] float32 (computed in bfloat16)
        if self.bias is not None:
            approx = approx + self.bias[: self.vocab_size]
        err = self.scale * (x.abs().sum(dim=-1, keepdim=True) * _INT8_ERROR)  # [B, V']
        err = err.add_(approx.abs(), alpha=_OUTPUT_ERROR)
        floor = (approx - err).amax(dim=-1, keepdim=True)  # [B, 1] the best lower bound
        rows, cols = torch.nonzero(approx.add_(err) >= floor, as_tuple=True)  # [n] each
        if rows.numel() > self.max_candidates * x.shape[0]:
            return self._full(x)
        exact = (self.weight[cols] * x[rows]).sum(dim=-1)  # [n]
        if self.bias is not None:
            exact = exact + self.bias[cols]
        logits = torch.full((x.shape[0], self.width), float("-inf"), dtype=torch.float32, device=x.device)
        logits[rows, cols] = exact
        return logits

    def _full(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.full(x).float()
        if self.vocab_size < self.width:
            logits[:, self.vocab_size :] = float("-inf")
        return logits
