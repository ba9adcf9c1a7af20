"""llmrun's own forward for ``gpt_neox`` and ``llama`` models: one block forward per family for the
prompt (prefill) and for one token per row (step), over a preallocated KV cache.

It computes what transformers computes, in the same order, so float32 greedy tokens match. The
weights are the model's own (prepared by :func:`~llmrun.backends.local.forward.build_decoder`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from llmrun.backends.local.kernels import Linear
from llmrun.backends.local.screened_head import ArgmaxHead

if TYPE_CHECKING:
    from llmrun.backends.local.forward import Session

NativeFamily = Literal["gpt_neox", "llama"]

__all__ = [
    "KVCache",
    "LayerNorm",
    "LlamaLayer",
    "NativeSession",
    "NativeSpec",
    "NeoxLayer",
    "RMSNorm",
    "decode_step",
]


@dataclass
class LayerNorm:
    weight: torch.Tensor | None
    bias: torch.Tensor | None
    eps: float
    width: tuple[int, ...]

    @classmethod
    def of(cls, module: nn.LayerNorm) -> LayerNorm:
        weight = None if module.weight is None else module.weight.detach()
        bias = None if module.bias is None else module.bias.detach()
        return cls(weight, bias, float(module.eps), tuple(module.normalized_shape))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.width, self.weight, self.bias, self.eps)


@dataclass
class RMSNorm:
    """LlamaRMSNorm, op for op: ``weight * (x * rsqrt(mean(x^2) + eps))``, computed in float32.

    ``weight`` None: the scale is folded into the next linear layer's weights (int8 only).
    """

    weight: torch.Tensor | None
    eps: float

    @classmethod
    def of(cls, module: Any) -> RMSNorm:
        return cls(module.weight.detach(), float(module.variance_epsilon))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        h = x if dtype == torch.float32 else x.to(torch.float32)
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        h = h if dtype == torch.float32 else h.to(dtype)
        return h if self.weight is None else self.weight * h


@dataclass
class NeoxLayer:
    """One GPTNeoX block. With ``fc_in`` and ``dense`` None (parallel residual only, int8): ``ln1``
    has no scale and shift, ``qkv`` computes ``fc_in``'s outputs after its own (both norms' scales
    and shifts folded into its weights), and ``fc_out`` multiplies ``[act(fc_in's outputs),
    attention]`` with ``dense``'s weights beside its own, so a step makes one norm and two matmuls
    where it made two norms and four."""

    ln1: LayerNorm
    ln2: LayerNorm
    qkv: Linear
    dense: Linear | None
    fc_in: Linear | None
    fc_out: Linear
    act: Callable[[torch.Tensor], torch.Tensor]
    parallel: bool


@dataclass
class LlamaLayer:
    norm1: RMSNorm
    norm2: RMSNorm
    qkv: Linear  # q, k and v projections, outputs concatenated
    o: Linear
    gate_up: Linear  # gate and up projections, outputs concatenated
    down: Linear
    act: Callable[[torch.Tensor], torch.Tensor]


@dataclass
class NativeSpec:
    """What the native forward needs of a gpt_neox or llama model."""

    family: NativeFamily
    layers: list[Any]
    embed: torch.Tensor  # [V, H]
    final_norm: Callable[[torch.Tensor], torch.Tensor]
    rotary: nn.Module  # the model's own rotary embedding: (x, positions) -> (cos, sin)
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rotary_dim: int


def rotate(x: torch.Tensor, cos: torch.Tensor, sin_signed: torch.Tensor) -> torch.Tensor:
    """transformers' ``x * cos + rotate_half(x) * sin``; ``sin_signed`` has its first half negated."""
    return x * cos + x.roll(x.shape[-1] // 2, -1) * sin_signed


class KVCache:
    """Keys and values of every layer, ``[B, KV, C, D]`` each, filled slot by slot, and the additive
    key mask ``[B, C]`` (0: attend, the dtype's minimum: padding) for ``C`` slots.

    Slot ``t`` holds the ``t``-th token fed to the session; a row's rotary positions are its own
    (left padding is skipped), so rows with different histories can share slots: :meth:`join`
    right-aligns two caches and :meth:`select_rows` drops rows.
    """

    def __init__(
        self,
        layers: int,
        prompt_mask: torch.Tensor,
        kv_heads: int,
        capacity: int,
        head_dim: int,
        dtype: torch.dtype,
    ) -> None:
        batch, width = prompt_mask.shape
        device = prompt_mask.device
        shape = (batch, kv_heads, capacity, head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.kv_heads, self.capacity, self.dtype = kv_heads, capacity, dtype
        self.length = 0  # slots filled
        self.key_mask = torch.zeros((batch, capacity), dtype=dtype, device=device)  # [B, C]
        self.key_mask[:, :width].masked_fill_(prompt_mask == 0, torch.finfo(dtype).min)
        self.step_mask = self.step_masks()

    def step_masks(self) -> torch.Tensor:
        """The key mask as a decode step reads it: ``[B * KV, 1, C]``."""
        return self.key_mask.repeat_interleave(self.kv_heads, dim=0)[:, None, :]

    def select_rows(self, rows: torch.Tensor) -> None:
        """Keep only ``rows`` (indices into the current batch)."""
        self.k = [k.index_select(0, rows) for k in self.k]
        self.v = [v.index_select(0, rows) for v in self.v]
        self.key_mask = self.key_mask.index_select(0, rows)
        self.step_mask = self.step_masks()

    def join(self, other: KVCache) -> None:
        """Append ``other``'s rows; both are right-aligned in the longer filled length, with room for
        the longer remaining capacity, and the slots before a row's history are masked out."""
        la, lb, ba = self.length, other.length, self.key_mask.shape[0]
        width = max(la, lb)
        capacity = width + max(self.capacity - la, other.capacity - lb)

        def aligned(a: torch.Tensor, b: torch.Tensor, fill: float) -> torch.Tensor:  # slots on dim 2
            out = torch.full((a.shape[0] + b.shape[0], *a.shape[1:2], capacity, *a.shape[3:]), fill,
                             dtype=a.dtype, device=a.device)  # fmt: skip
            out[:ba, :, width - la : width] = a[:, :, :la]
            out[ba:, :, width - lb : width] = b[:, :, :lb]
            return out

        self.k = [aligned(a, b, 0.0) for a, b in zip(self.k, other.k, strict=True)]
        self.v = [aligned(a, b, 0.0) for a, b in zip(self.v, other.v, strict=True)]
        hidden = torch.finfo(self.dtype).min
        mask = aligned(self.key_mask[:, None], other.key_mask[:, None], hidden)[:, 0]  # [B, C]
        mask[:, width:] = 0.0  # slots later steps write
        self.key_mask, self.length, self.capacity = mask, width, capacity
        self.step_mask = self.step_masks()


class NativeSession:
    """gpt_neox/llama forward with a KV cache ``[B, KV, S + N, D]`` per layer, filled position by position.

    Each row's positions count only its real tokens (left padding is skipped), pads are masked out
    of attention with an additive mask, and a decode step attends over the filled part of the cache.
    """

    can_select_rows = True

    def __init__(
        self,
        spec: NativeSpec,
        head: Linear,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        max_new_tokens: int,
        dtype: torch.dtype,
        compiled: Callable[..., torch.Tensor] | None = None,
    ) -> None:
        self.spec, self.head, self.dtype, self.compiled = spec, head, dtype, compiled
        self.heads, self.kv_heads = spec.num_heads, spec.num_kv_heads
        self.head_dim, self.rot = spec.head_dim, spec.rotary_dim
        self.groups = self.heads // self.kv_heads
        self.input_ids, self.attention_mask = input_ids, attention_mask
        width = input_ids.shape[1]
        device = input_ids.device
        capacity = width + max_new_tokens
        if compiled is not None:  # fixed shapes: rows stay, and cache lengths come in steps of 64
            self.can_select_rows = False
            capacity = -(-capacity // 64) * 64
        self.cache = KVCache(len(spec.layers), attention_mask, self.kv_heads, capacity, self.head_dim, dtype)
        if compiled is not None:  # the compiled step reads every slot: hide those not yet written
            self.cache.key_mask[:, width:] = torch.finfo(dtype).min
            self.cache.step_mask = self.cache.step_masks()
        self.next_pos = attention_mask.sum(dim=1)  # [B] position of each row's next token
        self.rope = self._rope_table(capacity, device)  # [S + N, 2R]: cos, then sin (first half negated)

    def _rope_table(self, length: int, device: torch.device) -> torch.Tensor:
        positions = torch.arange(length, device=device)[None, :]  # [1, L]
        probe = torch.empty(0, dtype=self.dtype, device=device)  # the rotary module reads its dtype, device
        cos, sin = self.spec.rotary(probe, positions)  # [1, L, R] each
        half = self.rot // 2
        return torch.cat([cos[0], -sin[0, :, :half], sin[0, :, half:]], dim=-1)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        """Final norm and LM head: ``[B, H]`` -> float32 ``[B, V]``."""
        return self.head(self.spec.final_norm(x)).float()

    def refine_argmax(self, logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return self.head.refine(logits, tokens) if isinstance(self.head, ArgmaxHead) else tokens

    def join(self, other: Session) -> bool:
        """Append ``other``'s rows: both caches are right-aligned in one of the longer filled length.

        Positions stay per row and earlier slots are masked out, so each row attends to what it did.
        """
        if not isinstance(other, NativeSession) or not self._shares_weights_with(other):
            return False
        self.cache.join(other.cache)
        self.next_pos = torch.cat([self.next_pos, other.next_pos])
        if self.rope.shape[0] < self.cache.capacity:
            self.rope = self._rope_table(self.cache.capacity, self.rope.device)
        return True

    def _shares_weights_with(self, other: NativeSession) -> bool:
        if self.compiled is not None or other.compiled is not None or other.spec is not self.spec:
            return False
        if isinstance(self.head, ArgmaxHead) and isinstance(other.head, ArgmaxHead):
            return self.head.screen is other.head.screen
        return self.head is other.head

    def select_rows(self, rows: torch.Tensor) -> None:
        self.cache.select_rows(rows)
        self.next_pos = self.next_pos.index_select(0, rows)

    # -- the prompt ------------------------------------------------------------------------------
    def prefill(self) -> torch.Tensor:
        ids, mask = self.input_ids, self.attention_mask
        width = ids.shape[1]
        positions = (mask.cumsum(-1) - 1).clamp_min(0)  # [B, S]
        rope = self.rope[positions]  # [B, S, 2R]
        cos, sin = rope[:, :, None, : self.rot], rope[:, :, None, self.rot :]  # [B, S, 1, R]
        bias = None  # no padding: plain causal attention
        if not bool(mask.all()):
            causal = torch.ones((width, width), dtype=torch.bool, device=ids.device).tril()  # [S, S]
            allowed = causal[None, :, :] & mask.bool()[:, None, :]  # [B, S, S]
            # additive and finite, so the rows of pads (nothing to attend to) stay finite too
            bias = torch.zeros(allowed.shape, dtype=self.dtype, device=ids.device)
            bias = bias.masked_fill_(~allowed, torch.finfo(self.dtype).min)[:, None]  # [B, 1, S, S]
        x = F.embedding(ids, self.spec.embed)  # [B, S, H]
        block = self._neox_prefill if self.spec.family == "gpt_neox" else self._llama_prefill
        for i, layer in enumerate(self.spec.layers):
            x = block(layer, i, x, cos, sin, bias)
        self.cache.length = width
        return self._logits(x[:, -1])

    def _attend_prefill(
        self, i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        """q ``[B, NH, S, D]``, k/v ``[B, KV, S, D]`` -> ``[B, S, NH * D]``; fills the cache."""
        width = k.shape[2]
        self.cache.k[i][:, :, :width] = k
        self.cache.v[i][:, :, :width] = v
        if self.groups > 1:
            k = k.repeat_interleave(self.groups, dim=1)
            v = v.repeat_interleave(self.groups, dim=1)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias, is_causal=bias is None, scale=self.head_dim**-0.5
        )  # [B, NH, S, D]
        return out.transpose(1, 2).reshape(q.shape[0], width, -1)

    def _neox_prefill(
        self,
        layer: NeoxLayer,
        i: int,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        bias: torch.Tensor | None,
    ) -> torch.Tensor:
        batch, width, _ = x.shape
        h = layer.qkv(layer.ln1(x))  # [B, S, 3 * NH * D] (and fc_in's outputs after, when fused)
        fused = h[..., 3 * self.heads * self.head_dim :] if layer.fc_in is None else None
        qkv = (h if fused is None else h[..., : 3 * self.heads * self.head_dim]).view(
            batch, width, self.heads, 3, self.head_dim
        )  # [B, S, NH, 3, D]
        qkv[..., :2, : self.rot] = rotate(qkv[..., :2, : self.rot], cos[..., None, :], sin[..., None, :])
        q, k, v = (qkv[..., j, :].transpose(1, 2) for j in range(3))  # [B, NH, S, D] each
        attended = self._attend_prefill(i, q, k, v, bias)
        return _neox_rest(layer, x, attended, fused)

    def _llama_prefill(
        self,
        layer: LlamaLayer,
        i: int,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        bias: torch.Tensor | None,
    ) -> torch.Tensor:
        batch, width, _ = x.shape
        nh, kv, d = self.heads, self.kv_heads, self.head_dim
        qkv = layer.qkv(layer.norm1(x))  # [B, S, (NH + 2 KV) * D]
        qk = rotate(qkv[..., : (nh + kv) * d].view(batch, width, nh + kv, d), cos, sin)  # [B, S, NH + KV, D]
        q, k = qk[:, :, :nh].transpose(1, 2), qk[:, :, nh:].transpose(1, 2)  # [B, NH, S, D], [B, KV, S, D]
        v = qkv[..., (nh + kv) * d :].view(batch, width, kv, d).transpose(1, 2)  # [B, KV, S, D]
        x = x + layer.o(self._attend_prefill(i, q, k, v, bias))
        gate, up = layer.gate_up(layer.norm2(x)).chunk(2, dim=-1)
        return x + layer.down(layer.act(gate) * up)

    # -- one token per row -----------------------------------------------------------------------
    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        t, cache = self.cache.length, self.cache
        if self.compiled is None:
            logits = decode_step(
                self.spec,
                self.head,
                tokens,
                self.next_pos,
                t,
                cache.step_mask,
                self.rope,
                cache.k,
                cache.v,
            )
        else:
            cache.step_mask[:, :, t] = 0.0  # the new position becomes visible
            where = torch.full((1,), t, dtype=torch.long, device=tokens.device)
            logits = self.compiled(
                self.spec, self.head, tokens, self.next_pos, where, cache.step_mask, self.rope, cache.k,
                cache.v,
            )  # fmt: skip
        cache.length = t + 1
        self.next_pos = self.next_pos + 1
        return logits


def decode_step(
    spec: NativeSpec,
    head: Linear,
    tokens: torch.Tensor,
    positions: torch.Tensor,
    t: int | torch.Tensor,
    mask: torch.Tensor,
    rope: torch.Tensor,
    k_cache: list[torch.Tensor],
    v_cache: list[torch.Tensor],
) -> torch.Tensor:
    """The native forward's hot step: tokens ``[B]`` at ``positions`` ``[B]`` -> float32 logits ``[B, V]``.

    ``t`` is the cache slot the new keys and values go to: an int (eager: attention reads slots
    ``0..t``) or a one-element tensor (static shapes for ``torch.compile``: attention reads the whole
    cache and ``mask`` ``[B * KV, 1, C]`` hides the slots not yet written).
    """
    rot = spec.rotary_dim
    table = rope[positions]  # [B, 2R]
    if spec.family == "gpt_neox":  # rotates qkv viewed [B, NH, 3, D]
        cos, sin = table[:, None, None, :rot], table[:, None, None, rot:]  # [B, 1, 1, R]
    else:  # rotates [B, NH + KV, D]
        cos, sin = table[:, None, :rot], table[:, None, rot:]  # [B, 1, R]
    if isinstance(t, int):
        mask = mask.narrow(2, 0, t + 1)  # [B * KV, 1, T]
    x = F.embedding(tokens, spec.embed)  # [B, H]
    for i, layer in enumerate(spec.layers):
        if spec.family == "gpt_neox":
            x = _neox_step(spec, layer, x, cos, sin, mask, t, k_cache[i], v_cache[i])
        else:
            x = _llama_step(spec, layer, x, cos, sin, mask, t, k_cache[i], v_cache[i])
    return head(spec.final_norm(x)).float()


def _attend_step(
    spec: NativeSpec,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor,
    t: int | torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
) -> torch.Tensor:
    """Write k/v ``[B, KV, D]`` at slot ``t``; q ``[B, NH, D]`` attends over the cache -> ``[B, NH * D]``."""
    batch, d = q.shape[0], spec.head_dim
    if isinstance(t, int):  # select/narrow rather than indexing: fewer ops in the hot step
        k_cache.select(2, t).copy_(k)
        v_cache.select(2, t).copy_(v)
        length = t + 1
    else:
        k_cache.index_copy_(2, t, k.unsqueeze(2))
        v_cache.index_copy_(2, t, v.unsqueeze(2))
        length = k_cache.shape[2]
    rows, capacity = batch * spec.num_kv_heads, k_cache.shape[2]
    keys = k_cache.view(rows, capacity, d).narrow(1, 0, length)  # [B * KV, T, D]
    values = v_cache.view(rows, capacity, d).narrow(1, 0, length)
    q3 = q.reshape(rows, spec.num_heads // spec.num_kv_heads, d)  # [B * KV, G, D]: a KV head's query heads
    scores = torch.baddbmm(mask, q3, keys.transpose(1, 2), alpha=d**-0.5)  # [B * KV, G, T]
    probs = scores.softmax(dim=-1, dtype=torch.float32).to(q.dtype)
    return torch.bmm(probs, values).view(batch, -1)  # [B, NH * D]


def _neox_step(
    spec: NativeSpec,
    layer: NeoxLayer,
    x: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    mask: torch.Tensor,
    t: int | torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
) -> torch.Tensor:
    rot, width = spec.rotary_dim, 3 * spec.num_heads * spec.head_dim
    h = layer.qkv(layer.ln1(x))  # [B, 3 * NH * D] (and fc_in's outputs after, when fused)
    fused = h.narrow(1, width, h.shape[1] - width) if layer.fc_in is None else None
    qkv = (h if fused is None else h.narrow(1, 0, width)).view(x.shape[0], spec.num_heads, 3, spec.head_dim)
    qk = qkv.narrow(2, 0, 2).narrow(3, 0, rot)  # [B, NH, 2, R]
    qk.copy_(rotate(qk, cos, sin))  # cos, sin: [B, 1, 1, R]
    q, k, v = qkv.unbind(2)  # [B, NH, D] each
    attended = _attend_step(spec, q, k, v, mask, t, k_cache, v_cache)
    return _neox_rest(layer, x, attended, fused)


def _neox_rest(
    layer: NeoxLayer, x: torch.Tensor, attended: torch.Tensor, fused: torch.Tensor | None
) -> torch.Tensor:
    """A GPT-NeoX layer after attention, prefill and step alike: projection, MLP and residuals."""
    if fused is not None:  # int8's parallel block: fc_out also computes dense (see NeoxLayer)
        return layer.fc_out(torch.cat([layer.act(fused), attended], dim=-1)) + x
    assert layer.fc_in is not None
    assert layer.dense is not None
    attn = layer.dense(attended)
    if layer.parallel:
        return layer.fc_out(layer.act(layer.fc_in(layer.ln2(x)))) + attn + x
    a = attn + x
    return layer.fc_out(layer.act(layer.fc_in(layer.ln2(a)))) + a


def _llama_step(
    spec: NativeSpec,
    layer: LlamaLayer,
    x: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    mask: torch.Tensor,
    t: int | torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
) -> torch.Tensor:
    batch, nh, kv, d = x.shape[0], spec.num_heads, spec.num_kv_heads, spec.head_dim
    qkv = layer.qkv(layer.norm1(x))  # [B, (NH + 2 KV) * D]
    qk = rotate(qkv[:, : (nh + kv) * d].view(batch, nh + kv, d), cos, sin)  # [B, NH + KV, D]
    v = qkv[:, (nh + kv) * d :].view(batch, kv, d)
    x = x + layer.o(_attend_step(spec, qk[:, :nh], qk[:, nh:], v, mask, t, k_cache, v_cache))
    gate, up = layer.gate_up(layer.norm2(x)).chunk(2, dim=-1)
    return x + layer.down(layer.act(gate) * up)
