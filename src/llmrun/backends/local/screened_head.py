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

__all__ = ["SCREEN_MAX_ROWS", "ArgmaxHead", "ScreenedHead", "can_screen"]

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
    """An LM head prepared for screening: the int8 copy of its first ``vocab_size`` rows.

    Shared by every call of a prepared model; :meth:`session` gives one call its own state.
    ``full`` computes the exact head (used for more than :data:`SCREEN_MAX_ROWS` rows, or when the
    screen leaves too many candidates). Ids at or past ``vocab_size`` are never chosen.
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
        self.screen = Int8Linear([real])  # bias added by hand, in float32
        self.scale = self.screen.scale.float()  # [V']
        self.max_candidates = max(64, int(self.vocab_size * _MAX_CANDIDATE_SHARE))

    def session(self) -> ArgmaxHead:
        """A head for one generation call (it keeps what :meth:`ArgmaxHead.refine` needs)."""
        return ArgmaxHead(self)

    def exact(self, x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """Float32 logits of ``(rows[i], cols[i])`` pairs, from the model's own weight rows; ``[n]``."""
        # index_select, not advanced indexing: 18 against 56 us for pythia's ~70 candidates of one row
        out = (self.weight.index_select(0, cols) * x.index_select(0, rows)).sum(dim=-1)  # [n]
        return out if self.bias is None else out + self.bias.index_select(0, cols)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Logits whose argmax is float32's: exact candidates, ``-inf`` elsewhere; ``[B, V]``."""
        logits, exact = self.screened(x)
        if exact is not None:
            logits.masked_fill_(~exact, float("-inf"))
        return logits

    def screened(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``x`` ``[B, H]`` float32 -> (logits ``[B, V]``, exact ``[B, V]`` bool or None: all exact).

        Exact entries hold float32 logits; the others an upper bound of theirs (``-inf`` past
        ``vocab_size``), and every one of them is below the largest exact entry of its row.
        """
        if x.shape[0] > SCREEN_MAX_ROWS:
            return self._full(x), None
        approx = self.screen(x)  # [B, V'] float32 (computed in bfloat16)
        if self.bias is not None:
            approx = approx + self.bias[: self.vocab_size]
        err = self.error_bound(x, approx)  # [B, V']
        floor = (approx - err).amax(dim=-1, keepdim=True)  # [B, 1] the best lower bound
        shape, vocab = (x.shape[0], self.width), self.vocab_size
        # written in place into the [B, V] results: no fill and copy passes over 50k logits per row
        logits = torch.empty(shape, dtype=torch.float32, device=x.device)
        upper = torch.add(approx, err, out=logits[:, :vocab])  # [B, V']
        exact = torch.empty(shape, dtype=torch.bool, device=x.device)
        candidate = torch.ge(upper, floor, out=exact[:, :vocab])  # [B, V']
        rows, cols = torch.nonzero(candidate, as_tuple=True)  # [n] each
        if rows.numel() > self.max_candidates * x.shape[0]:
            return self._full(x), None
        if vocab < self.width:
            logits[:, vocab:] = float("-inf")
            exact[:, vocab:] = True  # -inf, exactly: never chosen
        logits[rows, cols] = self.exact(x, rows, cols)
        return logits, exact

    def error_bound(self, x: torch.Tensor, approx: torch.Tensor) -> torch.Tensor:
        """A bound of ``|exact - approx|`` per logit ``[B, V']`` for inputs ``x`` ``[B, H]`` (module doc)."""
        err = self.scale * (x.abs().sum(dim=-1, keepdim=True) * _INT8_ERROR)  # [B, V']
        return err.add_(approx.abs(), alpha=_OUTPUT_ERROR)

    def _full(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.full(x).float()
        if self.vocab_size < self.width:
            logits[:, self.vocab_size :] = float("-inf")
        return logits


class ArgmaxHead:
    """One call's screened head: logits with upper bounds where not exact, and :meth:`refine`.

    The logits may then be masked (a grammar sets forbidden ids to ``-inf``) before the argmax;
    :meth:`refine` makes sure the chosen id holds an exact value, computing more ids in float32
    where an upper bound came out on top, so the result is float32's argmax over the allowed ids.
    """

    #: Ids recomputed in float32 per row and round of :meth:`refine`.
    REFINE_IDS = 64

    def __init__(self, screen: ScreenedHead) -> None:
        self.screen = screen
        self._x: torch.Tensor | None = None  # [B, H] the last call's input
        self._exact: torch.Tensor | None = None  # [B, V] which logits are exact; None: all

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        logits, self._exact = self.screen.screened(x)
        self._x = x
        return logits

    def refine(self, logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens`` ``[B]``, the argmax of ``logits`` ``[B, V]`` (the last call's, masked since):
        returns the argmax once every chosen logit is exact; ``logits`` is updated in place."""
        exact, x = self._exact, self._x
        if exact is None or x is None:
            return tokens
        while True:
            pending = torch.nonzero(~exact.gather(1, tokens[:, None]).squeeze(1)).flatten()  # [r]
            if pending.numel() == 0:
                return tokens
            bounds = logits[pending].masked_fill(exact[pending], float("-inf"))  # [r, V]
            k = min(self.REFINE_IDS, bounds.shape[1])
            values, cols = bounds.topk(k, dim=-1)  # [r, k] the largest upper bounds
            exact[pending[torch.isinf(values[:, 0])]] = True  # all masked: nothing left to refine
            rows = pending[:, None].expand(-1, k)  # [r, k]
            keep = torch.isfinite(values)  # masked ids stay -inf
            rows, cols = rows[keep], cols[keep]
            logits[rows, cols] = self.screen.exact(x, rows, cols)
            exact[rows, cols] = True
            tokens = logits.argmax(dim=-1)
