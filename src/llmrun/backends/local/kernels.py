"""CPU kernels for the decode loop: linear layers in the weight layouts a few rows multiply fastest.

On the CPU, in float32, :class:`LinearKernel` keeps extra copies of a weight (made once, when the
model is prepared): a transposed contiguous copy for one row (a GEMV-friendly layout) and a
oneDNN-packed copy for more rows. The LM head keeps no transposed copy (see
:func:`~llmrun.backends.local.forward.build_decoder`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

__all__ = ["SMALL_ROWS", "Linear", "LinearFactory", "LinearKernel", "float_linears", "fused_linear"]

#: Row counts up to this use the transposed copy of a weight (a GEMV-friendly layout) where there is
#: one, when torch runs one thread; otherwise the oneDNN-packed copy. Measured on a 2-core AVX2 CPU
#: for pythia-70m shapes, weights read cold: one row through the transposed copy of a layer takes
#: 0.40 ms against 0.65 packed; from two rows on, oneDNN wins. With more threads the packed copy
#: wins at one row too: MKL multiplies one row on one thread (``addmm``, ``addmv`` and ``F.linear``
#: alike, whatever ``torch.get_num_threads()`` says), so a bandwidth-bound step would read every
#: such weight through one core, while oneDNN splits it over all of them.
SMALL_ROWS = 1

Linear = Callable[[torch.Tensor], torch.Tensor]
#: Builds the :data:`Linear` of one or more ``nn.Linear`` of the same input (outputs concatenated).
LinearFactory = Callable[[Sequence[nn.Linear]], Linear]


def _onednn_available() -> bool:
    return bool(torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled)  # type: ignore[no-untyped-call]


class LinearKernel:
    """``x @ weight.T + bias`` with the fastest layout for the number of rows.

    With ``layouts=True`` on a float32 CPU weight it keeps a transposed contiguous copy (for up to
    :data:`SMALL_ROWS` rows; only with ``transposed`` and where the output is wider than the input,
    where it helps) and a oneDNN-packed copy (every other call; not inside ``torch.compile``).
    Otherwise it calls ``F.linear``. ``dtype`` computes in another dtype (e.g. bfloat16 for the LM
    head; changes numerics).
    """

    def __init__(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        *,
        layouts: bool,
        dtype: torch.dtype | None = None,
        transposed: bool = True,
    ) -> None:
        weight, bias = weight.detach(), None if bias is None else bias.detach()
        if dtype is not None and dtype != weight.dtype:
            weight = weight.to(dtype)
            bias = None if bias is None else bias.to(dtype)
        self.weight = weight  # [O, I]
        self.bias = bias  # [O] or None
        self.dtype = weight.dtype
        self.t_weight: torch.Tensor | None = None  # [I, O]
        self.packed: torch.Tensor | None = None  # oneDNN layout of [O, I]
        if layouts and weight.device.type == "cpu" and weight.dtype == torch.float32:
            out_features, in_features = weight.shape
            if transposed and out_features > in_features:
                self.t_weight = weight.t().contiguous()
            if _onednn_available():
                self.packed = torch.ops.mkldnn._reorder_linear_weight(weight, 32)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``[N, I]`` (or ``[..., I]``); returns ``[N, O]``."""
        if x.dtype != self.dtype:
            x = x.to(self.dtype)
        rows = x.shape[0] if x.dim() == 2 else x.numel() // x.shape[-1]
        if rows <= SMALL_ROWS and self.t_weight is not None and x.dim() == 2 and torch.get_num_threads() == 1:
            if self.bias is None:
                return torch.mm(x, self.t_weight)
            return torch.addmm(self.bias, x, self.t_weight)
        if self.packed is not None and not torch.compiler.is_compiling():  # opaque to the compiler
            out: torch.Tensor = torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")
            return out
        return F.linear(x, self.weight, self.bias)


def fused_linear(linears: Sequence[nn.Linear], *, layouts: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    """Several linears of one input, outputs concatenated along the last dim.

    With ``layouts`` the weights are concatenated into one kernel (one matmul, a copy of the
    weights); without, each linear runs on the model's own weight and the outputs are joined.
    """
    if not layouts:
        kernels = [LinearKernel(lin.weight, lin.bias, layouts=False) for lin in linears]
        return lambda x: torch.cat([kernel(x) for kernel in kernels], dim=-1)
    weight = torch.cat([lin.weight.detach() for lin in linears], dim=0)
    bias = None
    if any(lin.bias is not None for lin in linears):
        bias = torch.cat(
            [
                lin.bias.detach() if lin.bias is not None else lin.weight.new_zeros(lin.out_features)
                for lin in linears
            ]
        )
    return LinearKernel(weight, bias, layouts=True)


def float_linears(layouts: bool) -> LinearFactory:
    """The model's own float weights, with the extra CPU layouts when ``layouts``."""

    def make(linears: Sequence[nn.Linear]) -> Linear:
        if len(linears) == 1:
            return LinearKernel(linears[0].weight, linears[0].bias, layouts=layouts)
        return fused_linear(linears, layouts=layouts)

    return make
