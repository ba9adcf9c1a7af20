"""Weight-only int8 linear layers for the CPU decode loop (opt-in: ``quantize="int8"``).

Each weight ``[O, I]`` is quantized once, at load time, symmetrically with one bfloat16 scale
per output channel: ``w ≈ q * scale`` with ``q`` in [-127, 127]. A call rounds its input to
bfloat16, multiplies with torch's int8 weight kernel (``aten._weight_int8pack_mm``) and returns the
result, rounded to bfloat16, in the input's dtype; the bias is added in the input's dtype.

Why: at one row per step the CPU decode loop is bound by memory bandwidth, and an int8 weight is
a quarter of the float32 bytes. What it costs: the weights carry up to half a quantization step of
error per element and activations and outputs lose float32 precision, so logits move (the
largest error was about 2 % of the logits' scale on pythia-70m's shape with random weights) and
greedy tokens can differ from float32's where the top two logits are close. Measured figures
are in ``docs/guide/speed.md``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from llmrun.errors import InvalidInputError

__all__ = ["QUANTIZE_CHOICES", "Int8Linear", "check_quantize"]

#: Values of the ``quantize`` option: ``"none"`` keeps the model's own weights.
QUANTIZE_CHOICES = ("none", "int8")
#: Rows quantized at a time.
_BLOCK_ROWS = 4096
#: torch's CPU int8 kernel computes wrong results (or crashes) unless the input width is a multiple of this.
_KERNEL_WIDTH_MULTIPLE = 8


def check_quantize(quantize: object) -> str:
    """``quantize`` validated: one of :data:`QUANTIZE_CHOICES` (``None`` reads as ``"none"``)."""
    if quantize is None:
        return "none"
    if not isinstance(quantize, str) or quantize not in QUANTIZE_CHOICES:
        raise InvalidInputError(
            f"quantize={quantize!r} is not supported; use 'none' (the model's own weights) or "
            "'int8' (int8 weights for the CPU decode loop: faster at small batches, changes numerics)"
        )
    return quantize


class Int8Linear:
    """``x @ weight.T + bias`` of one or more linears of the same input, with int8 weights.

    Several linears (e.g. q, k and v) become one kernel whose outputs are concatenated, as their
    weights are quantized per output channel anyway.
    """

    def __init__(self, linears: Sequence[nn.Linear]) -> None:
        weights = [lin.weight.detach() for lin in linears]  # [O_k, I] each
        out_features, in_features = sum(w.shape[0] for w in weights), weights[0].shape[1]
        device = weights[0].device
        self.qweight = torch.empty((out_features, in_features), dtype=torch.int8, device=device)  # [O, I]
        self.scale = torch.empty(out_features, dtype=torch.bfloat16, device=device)  # [O]
        start = 0
        for weight in weights:  # in blocks of rows: no float32 temporaries the size of the weight
            for block in torch.split(weight, _BLOCK_ROWS):
                rows = slice(start, start + block.shape[0])
                block = block.float()
                scale = (block.abs().amax(dim=1) / 127).clamp_min(torch.finfo(torch.bfloat16).tiny)
                self.scale[rows] = scale  # rounded to bfloat16; quantize against the rounded scale
                q = torch.round(block / self.scale[rows].float()[:, None]).clamp_(-127, 127)
                self.qweight[rows] = q
                start += block.shape[0]
        self.bias: torch.Tensor | None = None
        if any(lin.bias is not None for lin in linears):
            self.bias = torch.cat(
                [
                    lin.bias.detach() if lin.bias is not None else lin.weight.new_zeros(lin.out_features)
                    for lin in linears
                ]
            )
        self._kernel = in_features % _KERNEL_WIDTH_MULTIPLE == 0

    @property
    def nbytes(self) -> int:
        """Bytes of the quantized weight and its scales."""
        return self.qweight.numel() + self.scale.numel() * self.scale.element_size()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``[..., I]``; returns ``[..., O]`` in ``x``'s dtype."""
        flat = x.reshape(-1, x.shape[-1]).to(torch.bfloat16)  # [N, I]
        if self._kernel:
            out: torch.Tensor = torch.ops.aten._weight_int8pack_mm(flat, self.qweight, self.scale)  # [N, O]
        else:  # the same arithmetic, dequantizing on the fly (slow; only for odd widths)
            out = F.linear(flat, self.qweight.to(torch.bfloat16)) * self.scale
        out = out.to(x.dtype)
        if self.bias is not None:
            out = out + self.bias.to(x.dtype)
        return out.reshape(*x.shape[:-1], out.shape[-1])
