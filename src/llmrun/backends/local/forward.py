"""Model forwards for the decode loop: one prompt pass, then one token per step, logits of the last position.

Two kinds of session, both behind :class:`Session`:

- **native** (``gpt_neox`` and ``llama`` models built from plain ``nn.Linear`` layers): a
  gpt-fast-style forward over the model's own weights with a preallocated KV cache, a rotary
  table computed once per call by the model's own rotary module, and few tensor ops per layer.
  It computes what transformers computes, in the same order, so float32 greedy tokens match.
- **generic** (any other ``AutoModelForCausalLM``, or a model wrapped by e.g. peft): the
  transformers base model with its own cache and position ids that account for left padding.

Both apply the LM head to the last position only, through :class:`LinearKernel`: on the CPU,
in float32, it keeps extra copies of a weight in the layouts that are fastest for few rows
(transposed, contiguous) and for many rows (oneDNN-packed). Those copies are made once, in
:func:`build_decoder`, at load time.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from llmrun.backends.local.screened_head import ArgmaxHead, ScreenedHead, can_screen

__all__ = ["Decoder", "LinearKernel", "Session", "build_decoder"]

#: Row counts up to this use the transposed copy of a weight (a GEMV-friendly layout) where there is
#: one; otherwise the oneDNN-packed copy. Measured on a 2-core AVX2 CPU for pythia-70m shapes, weights
#: read cold: one row through the transposed copy of a layer takes 0.40 ms against 0.65 packed;
#: from two rows on, oneDNN wins.
SMALL_ROWS = 1
#: Extra weight layouts are made automatically only for models up to this many parameter bytes.
AUTO_LAYOUTS_MAX_BYTES = 2 * 1024**3
#: Model types whose logits are exactly ``lm_head(base_model(x).last_hidden_state)``.
PLAIN_HEAD_MODEL_TYPES = frozenset(
    {"gpt_neox", "llama", "mistral", "qwen2", "qwen3", "gpt2", "opt", "phi3", "olmo", "olmo2", "stablelm"}
)
#: Rotary variants whose angle for a position does not depend on the sequence length.
_STATIC_ROPE_TYPES = frozenset({"default", "linear", "llama3"})

Family = Literal["gpt_neox", "llama", "generic"]


class Session(Protocol):
    """One generation call's model state (KV cache, positions, mask) for a batch of rows."""

    #: Whether :meth:`select_rows` can shrink the batch.
    can_select_rows: bool

    def prefill(self) -> torch.Tensor:
        """Run the prompts; return the float32 logits of each row's last position ``[B, V]``."""
        ...

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Append one token per row ``[B]``; return the float32 logits of that position ``[B, V]``."""
        ...

    def select_rows(self, rows: torch.Tensor) -> None:
        """Keep only ``rows`` (indices into the current batch)."""
        ...

    def refine_argmax(self, logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Given the argmax ``tokens`` ``[B]`` of the last logits (masked since, perhaps), the
        float32 argmax; a no-op unless the session was started ``argmax_only``."""
        ...

    def join(self, other: Session) -> bool:
        """Append ``other``'s rows after this session's (both between steps); False if they cannot share."""
        ...


# ----------------------------------------------------------------------------- linear layers


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
        if rows <= SMALL_ROWS and self.t_weight is not None and x.dim() == 2:
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


# ----------------------------------------------------------------------------- the prepared model


@dataclass
class _LayerNorm:
    weight: torch.Tensor | None
    bias: torch.Tensor | None
    eps: float
    width: tuple[int, ...]

    @classmethod
    def of(cls, module: nn.LayerNorm) -> _LayerNorm:
        weight = None if module.weight is None else module.weight.detach()
        bias = None if module.bias is None else module.bias.detach()
        return cls(weight, bias, float(module.eps), tuple(module.normalized_shape))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.width, self.weight, self.bias, self.eps)


@dataclass
class _RMSNorm:
    """LlamaRMSNorm, op for op: ``weight * (x * rsqrt(mean(x^2) + eps))``, computed in float32."""

    weight: torch.Tensor
    eps: float

    @classmethod
    def of(cls, module: Any) -> _RMSNorm:
        return cls(module.weight.detach(), float(module.variance_epsilon))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        h = x if dtype == torch.float32 else x.to(torch.float32)
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * (h if dtype == torch.float32 else h.to(dtype))


#: A linear layer as the native forward calls it: ``[..., I]`` -> ``[..., O]``.
Linear = Callable[[torch.Tensor], torch.Tensor]
#: Builds the :data:`Linear` of one or more ``nn.Linear`` of the same input (outputs concatenated).
LinearFactory = Callable[[Sequence[nn.Linear]], Linear]


@dataclass
class _NeoxLayer:
    ln1: _LayerNorm
    ln2: _LayerNorm
    qkv: Linear
    dense: Linear
    fc_in: Linear
    fc_out: Linear
    act: Callable[[torch.Tensor], torch.Tensor]
    parallel: bool


@dataclass
class _LlamaLayer:
    norm1: _RMSNorm
    norm2: _RMSNorm
    qkv: Linear  # q, k and v projections, outputs concatenated
    o: Linear
    gate_up: Linear  # gate and up projections, outputs concatenated
    down: Linear
    act: Callable[[torch.Tensor], torch.Tensor]


@dataclass
class _Native:
    """What the native forward needs of a gpt_neox or llama model."""

    family: Family
    layers: list[Any]
    embed: torch.Tensor  # [V, H]
    final_norm: Callable[[torch.Tensor], torch.Tensor]
    rotary: nn.Module  # the model's own rotary embedding: (x, positions) -> (cos, sin)
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rotary_dim: int


@dataclass
class Decoder:
    """A model prepared once for fast decoding; build with :func:`build_decoder`.

    It refers to the model weakly (its weights and submodules strongly), so caching it per model
    does not keep the model alive.
    """

    model_ref: weakref.ref[nn.Module]
    #: The LM head, or None when the generic path calls the whole model for logits.
    head: Linear | None
    #: The base (decoder) module: ``model.gpt_neox``, ``model.model``, ...
    base: nn.Module
    fingerprint: tuple[Any, ...]
    native: _Native | None = None
    #: The generic path's cache argument: ``cache`` (transformers 5) or ``past_key_values``.
    cache_kwarg: str = "cache"
    #: Whether the model's forward takes ``logits_to_keep``.
    logits_to_keep: bool = False
    #: :func:`decode_step` under ``torch.compile`` (static shapes), or None for eager steps.
    compiled_step: Callable[..., torch.Tensor] | None = None
    #: Whether the head may be screened for argmax-only sessions (see :mod:`.screened_head`).
    screenable: bool = False
    #: Screened heads already built, by vocabulary size.
    screens: dict[int, ScreenedHead] = field(default_factory=dict)

    @property
    def family(self) -> Family:
        """``"gpt_neox"`` or ``"llama"`` for the native forward, else ``"generic"``."""
        return self.native.family if self.native is not None else "generic"

    @property
    def model(self) -> nn.Module:
        model = self.model_ref()
        if model is None:
            raise ReferenceError("the model this decoder was prepared for no longer exists")
        return model

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def is_current(self) -> bool:
        """False when the model's weights or modules changed since this was built (training, peft)."""
        return _fingerprint(self.model) == self.fingerprint

    def start(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        max_new_tokens: int,
        *,
        argmax_only: bool = False,
        vocab_size: int | None = None,
    ) -> Session:
        """A session for a left-padded batch ``[B, S]`` that will grow by up to ``max_new_tokens``.

        ``argmax_only``: the caller reads only each row's argmax over the ids below ``vocab_size``
        (None: all), after masking some ids perhaps, and passes it through
        :meth:`Session.refine_argmax`; the head may then return upper bounds instead of exact
        logits for ids that cannot win (see :mod:`.screened_head`).
        """
        if self.native is not None and self.head is not None:
            head = self.head
            if argmax_only and self.screenable and self.compiled_step is None:
                head = self._screen(vocab_size).session()
            return _NativeSession(
                self.native,
                head,
                input_ids,
                attention_mask,
                max_new_tokens,
                self.dtype,
                self.compiled_step,
            )
        return _GenericSession(self, input_ids, attention_mask)

    def _screen(self, vocab_size: int | None) -> ScreenedHead:
        """The screened head for ids below ``vocab_size`` (None: all), built on first use."""
        hf: Any = self.model
        module = hf.get_output_embeddings()
        width = int(module.weight.shape[0])
        vocab = width if vocab_size is None else min(vocab_size, width)
        screen = self.screens.get(vocab)
        if screen is None:
            full = self.head
            assert full is not None  # only native decoders, which always have a head, are screenable
            screen = self.screens[vocab] = ScreenedHead(module.weight, module.bias, vocab, full)
        return screen


def _fingerprint(model: nn.Module) -> tuple[Any, ...]:
    return tuple(
        (name, type(module), id(param), param._version, param.data_ptr())
        for name, module in model.named_modules()
        for param in module.parameters(recurse=False)
    )


def build_decoder(
    model: nn.Module,
    *,
    native: bool = True,
    layouts: bool | None = None,
    head_dtype: torch.dtype | None = None,
    compile: bool = False,
    quantize: str = "none",
) -> Decoder:
    """Prepare ``model`` (a transformers causal LM) for :class:`Session` decoding.

    ``native``: use the built-in forward for gpt_neox/llama models where possible.
    ``layouts``: keep extra CPU weight layouts (None: when the model is at most
    :data:`AUTO_LAYOUTS_MAX_BYTES`). ``head_dtype``: run the LM head in this dtype.
    ``compile``: run the native decode step under ``torch.compile`` with a static-shape KV cache
    (compiles on first use for each batch size and cache length; the generic path ignores it).
    ``quantize="int8"``: every linear layer and the LM head of the native forward with int8
    weights (:mod:`.quantize`); needs the native forward on the CPU, else
    :class:`~llmrun.errors.UnsupportedFeatureError`.
    """
    hf: Any = model
    if layouts is None:
        size = sum(p.numel() * p.element_size() for p in model.parameters())
        layouts = size <= AUTO_LAYOUTS_MAX_BYTES
    base = _base_model(model)
    model_type = str(getattr(hf.config, "model_type", ""))
    fingerprint = _fingerprint(model)
    get_head = getattr(hf, "get_output_embeddings", None)
    head_module = get_head() if callable(get_head) else None
    plain_head = (
        head_module if type(head_module) is nn.Linear and model_type in PLAIN_HEAD_MODEL_TYPES else None
    )
    if quantize == "int8":
        return _build_int8(model, hf, base, model_type, fingerprint, plain_head if native else None)
    head = None
    if plain_head is not None:
        # no transposed copy of the head: read cold, one row multiplies as fast in the packed
        # layout (18.2 vs 19.2 ms a sampled token on pythia-70m here), and it would cost 103 MB
        head = LinearKernel(
            plain_head.weight, plain_head.bias, layouts=layouts, dtype=head_dtype, transposed=False
        )
    if native and head is not None:
        spec = _build_native(hf, base, model_type, _float_linears(layouts))
        if spec is not None:
            compiled = torch.compile(decode_step, fullgraph=True) if compile else None
            screenable = layouts and head_dtype is None and can_screen(head.weight)
            return Decoder(
                weakref.ref(model),
                head,
                base,
                fingerprint,
                native=spec,
                compiled_step=compiled,
                screenable=screenable,
            )
    params = inspect.signature((base if head is not None else model).forward).parameters
    cache_kwarg = "cache" if "cache" in params else "past_key_values"
    keep = "logits_to_keep" in inspect.signature(model.forward).parameters
    return Decoder(weakref.ref(model), head, base, fingerprint, cache_kwarg=cache_kwarg, logits_to_keep=keep)


def _build_int8(
    model: nn.Module,
    hf: Any,
    base: nn.Module,
    model_type: str,
    fingerprint: tuple[Any, ...],
    head_module: Any,
) -> Decoder:
    from llmrun.backends.local.quantize import Int8Linear
    from llmrun.errors import UnsupportedFeatureError

    device = next(model.parameters()).device
    if device.type != "cpu":
        raise UnsupportedFeatureError(
            f"quantize='int8' is a CPU fast path, but the model is on {device}; "
            "on a GPU use dtype='bfloat16' (or float16) instead"
        )
    spec = _build_native(hf, base, model_type, Int8Linear) if head_module is not None else None
    if spec is None:
        raise UnsupportedFeatureError(
            f"quantize='int8' needs llmrun's own forward (gpt_neox or llama models built from plain "
            f"nn.Linear layers); this {type(model).__name__} ({model_type or 'unknown type'}) runs through "
            "transformers' forward, so use quantize='none'"
        )
    return Decoder(weakref.ref(model), Int8Linear([head_module]), base, fingerprint, native=spec)


def _float_linears(layouts: bool) -> LinearFactory:
    """The model's own float weights, with the extra CPU layouts when ``layouts``."""

    def make(linears: Sequence[nn.Linear]) -> Linear:
        if len(linears) == 1:
            return LinearKernel(linears[0].weight, linears[0].bias, layouts=layouts)
        return fused_linear(linears, layouts=layouts)

    return make


def _base_model(model: nn.Module) -> nn.Module:
    prefix = getattr(model, "base_model_prefix", "")
    base = getattr(model, prefix, None) if prefix else None
    if isinstance(base, nn.Module) and base is not model:
        return base
    get_decoder = getattr(model, "get_decoder", None)
    if callable(get_decoder):
        found = get_decoder()
        if isinstance(found, nn.Module):
            return found
    return model


def _plain_linears(*modules: Any) -> bool:
    return all(type(m) is nn.Linear for m in modules)


def _build_native(model: Any, base: Any, model_type: str, make: LinearFactory) -> _Native | None:
    """The native forward's weights, or None where the model is not one it computes exactly."""
    config = model.config
    embed = getattr(base, "embed_in" if model_type == "gpt_neox" else "embed_tokens", None)
    rotary = getattr(base, "rotary_emb", None)
    if type(embed) is not nn.Embedding or not isinstance(rotary, nn.Module):
        return None
    if getattr(rotary, "rope_type", "default") not in _STATIC_ROPE_TYPES:
        return None
    if model_type == "gpt_neox":
        return _build_neox(config, base, embed, rotary, make)
    if model_type == "llama":
        return _build_llama(config, base, embed, rotary, make)
    return None


def _build_neox(
    config: Any, base: Any, embed: nn.Embedding, rotary: nn.Module, make: LinearFactory
) -> _Native | None:
    final = getattr(base, "final_layer_norm", None)
    if type(final) is not nn.LayerNorm:
        return None
    layers: list[Any] = []
    rotary_dim = 0
    for layer in base.layers:
        att, mlp = layer.attention, layer.mlp
        linears = (att.query_key_value, att.dense, mlp.dense_h_to_4h, mlp.dense_4h_to_h)
        norms = (layer.input_layernorm, layer.post_attention_layernorm)
        if not _plain_linears(*linears) or any(type(n) is not nn.LayerNorm for n in norms):
            return None
        qkv, dense, fc_in, fc_out = (make([lin]) for lin in linears)
        ln1, ln2 = (_LayerNorm.of(n) for n in norms)
        layers.append(
            _NeoxLayer(
                ln1, ln2, qkv, dense, fc_in, fc_out, mlp.act.forward, bool(layer.use_parallel_residual)
            )
        )
        rotary_dim = int(att.rotary_ndims)
    heads = int(config.num_attention_heads)
    return _Native(
        "gpt_neox", layers, embed.weight.detach(), _LayerNorm.of(final), rotary,
        heads, heads, int(config.hidden_size) // heads, rotary_dim,
    )  # fmt: skip


def _build_llama(
    config: Any, base: Any, embed: nn.Embedding, rotary: nn.Module, make: LinearFactory
) -> _Native | None:
    final = getattr(base, "norm", None)
    if getattr(config, "pretraining_tp", 1) != 1 or not _is_rms_norm(final):
        return None
    layers: list[Any] = []
    head_dim = 0
    for layer in base.layers:
        att, mlp = layer.self_attn, layer.mlp
        linears = (att.q_proj, att.k_proj, att.v_proj, att.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj)
        norms = (layer.input_layernorm, layer.post_attention_layernorm)
        if not _plain_linears(*linears) or not all(_is_rms_norm(n) for n in norms):
            return None
        layers.append(
            _LlamaLayer(
                _RMSNorm.of(norms[0]),
                _RMSNorm.of(norms[1]),
                make([att.q_proj, att.k_proj, att.v_proj]),
                make([att.o_proj]),
                make([mlp.gate_proj, mlp.up_proj]),
                make([mlp.down_proj]),
                mlp.act_fn.forward,
            )
        )
        head_dim = int(att.head_dim)
    return _Native(
        "llama", layers, embed.weight.detach(), _RMSNorm.of(final), rotary,
        int(config.num_attention_heads), int(config.num_key_value_heads), head_dim, head_dim,
    )  # fmt: skip


def _is_rms_norm(module: Any) -> bool:
    """A LlamaRMSNorm (exactly that class: subclasses may compute something else)."""
    return (
        isinstance(module, nn.Module)
        and type(module).__name__ == "LlamaRMSNorm"
        and isinstance(getattr(module, "weight", None), torch.Tensor)
        and isinstance(getattr(module, "variance_epsilon", None), float)
    )


# ----------------------------------------------------------------------------- native session


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin_signed: torch.Tensor) -> torch.Tensor:
    """transformers' ``x * cos + rotate_half(x) * sin``; ``sin_signed`` has its first half negated."""
    return x * cos + x.roll(x.shape[-1] // 2, -1) * sin_signed


class _NativeSession:
    """gpt_neox/llama forward with a KV cache ``[B, KV, S + N, D]`` per layer, filled position by position.

    Each row's positions count only its real tokens (left padding is skipped), pads are masked out
    of attention with an additive mask, and a decode step attends over the filled part of the cache.
    """

    can_select_rows = True

    def __init__(
        self,
        spec: _Native,
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
        batch, width = input_ids.shape
        device = input_ids.device
        capacity = width + max_new_tokens
        if compiled is not None:  # fixed shapes: rows stay, and cache lengths come in steps of 64
            self.can_select_rows = False
            capacity = -(-capacity // 64) * 64
        self.capacity = capacity
        cache_shape = (batch, self.kv_heads, capacity, self.head_dim)
        self.k_cache = [torch.zeros(cache_shape, dtype=dtype, device=device) for _ in spec.layers]
        self.v_cache = [torch.zeros(cache_shape, dtype=dtype, device=device) for _ in spec.layers]
        self.length = 0  # cache positions filled
        self.key_mask = torch.zeros((batch, capacity), dtype=dtype, device=device)  # [B, S + N] additive
        self.key_mask[:, :width].masked_fill_(attention_mask == 0, torch.finfo(dtype).min)
        if compiled is not None:  # the compiled step reads every slot: hide those not yet written
            self.key_mask[:, width:] = torch.finfo(dtype).min
        self.step_mask = self._step_mask()  # [B * KV, 1, S + N]
        self.next_pos = attention_mask.sum(dim=1)  # [B] position of each row's next token
        self.rope = self._rope_table(capacity, device)  # [S + N, 2R]: cos, then sin (first half negated)

    def _step_mask(self) -> torch.Tensor:
        return self.key_mask.repeat_interleave(self.kv_heads, dim=0)[:, None, :]

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
        if not isinstance(other, _NativeSession) or not self._shares_weights_with(other):
            return False
        la, lb = self.length, other.length
        width = max(la, lb)
        capacity = width + max(self.capacity - la, other.capacity - lb)
        ba = self.next_pos.shape[0]

        def aligned(
            a: torch.Tensor, b: torch.Tensor, fill: float
        ) -> torch.Tensor:  # [B, ..., C] slots on dim 2
            shape = (a.shape[0] + b.shape[0], *a.shape[1:2], capacity, *a.shape[3:])
            out = torch.full(shape, fill, dtype=a.dtype, device=a.device)
            out[:ba, :, width - la : width] = a[:, :, :la]
            out[ba:, :, width - lb : width] = b[:, :, :lb]
            return out

        self.k_cache = [aligned(a, b, 0.0) for a, b in zip(self.k_cache, other.k_cache, strict=True)]
        self.v_cache = [aligned(a, b, 0.0) for a, b in zip(self.v_cache, other.v_cache, strict=True)]
        hidden = torch.finfo(self.dtype).min
        mask = aligned(self.key_mask[:, None], other.key_mask[:, None], hidden)[:, 0]  # [B, C]
        mask[:, width:] = 0.0  # slots written by later steps
        self.key_mask, self.length, self.capacity = mask, width, capacity
        self.step_mask = self._step_mask()
        self.next_pos = torch.cat([self.next_pos, other.next_pos])
        if self.rope.shape[0] < capacity:
            self.rope = self._rope_table(capacity, self.rope.device)
        return True

    def _shares_weights_with(self, other: _NativeSession) -> bool:
        if self.compiled is not None or other.compiled is not None or other.spec is not self.spec:
            return False
        if isinstance(self.head, ArgmaxHead) and isinstance(other.head, ArgmaxHead):
            return self.head.screen is other.head.screen
        return self.head is other.head

    def select_rows(self, rows: torch.Tensor) -> None:
        self.k_cache = [k.index_select(0, rows) for k in self.k_cache]
        self.v_cache = [v.index_select(0, rows) for v in self.v_cache]
        self.key_mask = self.key_mask.index_select(0, rows)
        self.step_mask = self._step_mask()
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
        self.length = width
        return self._logits(x[:, -1])

    def _attend_prefill(
        self, i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        """q ``[B, NH, S, D]``, k/v ``[B, KV, S, D]`` -> ``[B, S, NH * D]``; fills the cache."""
        width = k.shape[2]
        self.k_cache[i][:, :, :width] = k
        self.v_cache[i][:, :, :width] = v
        if self.groups > 1:
            k = k.repeat_interleave(self.groups, dim=1)
            v = v.repeat_interleave(self.groups, dim=1)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias, is_causal=bias is None, scale=self.head_dim**-0.5
        )  # [B, NH, S, D]
        return out.transpose(1, 2).reshape(q.shape[0], width, -1)

    def _neox_prefill(
        self,
        layer: _NeoxLayer,
        i: int,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        bias: torch.Tensor | None,
    ) -> torch.Tensor:
        batch, width, _ = x.shape
        qkv = layer.qkv(layer.ln1(x)).view(batch, width, self.heads, 3, self.head_dim)  # [B, S, NH, 3, D]
        qkv[..., :2, : self.rot] = _rotate(qkv[..., :2, : self.rot], cos[..., None, :], sin[..., None, :])
        q, k, v = (qkv[..., j, :].transpose(1, 2) for j in range(3))  # [B, NH, S, D] each
        attn = layer.dense(self._attend_prefill(i, q, k, v, bias))
        if layer.parallel:
            return layer.fc_out(layer.act(layer.fc_in(layer.ln2(x)))) + attn + x
        a = attn + x
        return layer.fc_out(layer.act(layer.fc_in(layer.ln2(a)))) + a

    def _llama_prefill(
        self,
        layer: _LlamaLayer,
        i: int,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        bias: torch.Tensor | None,
    ) -> torch.Tensor:
        batch, width, _ = x.shape
        nh, kv, d = self.heads, self.kv_heads, self.head_dim
        qkv = layer.qkv(layer.norm1(x))  # [B, S, (NH + 2 KV) * D]
        qk = _rotate(qkv[..., : (nh + kv) * d].view(batch, width, nh + kv, d), cos, sin)  # [B, S, NH + KV, D]
        q, k = qk[:, :, :nh].transpose(1, 2), qk[:, :, nh:].transpose(1, 2)  # [B, NH, S, D], [B, KV, S, D]
        v = qkv[..., (nh + kv) * d :].view(batch, width, kv, d).transpose(1, 2)  # [B, KV, S, D]
        x = x + layer.o(self._attend_prefill(i, q, k, v, bias))
        gate, up = layer.gate_up(layer.norm2(x)).chunk(2, dim=-1)
        return x + layer.down(layer.act(gate) * up)

    # -- one token per row -----------------------------------------------------------------------
    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        t = self.length
        if self.compiled is None:
            logits = decode_step(
                self.spec,
                self.head,
                tokens,
                self.next_pos,
                t,
                self.step_mask,
                self.rope,
                self.k_cache,
                self.v_cache,
            )
        else:
            self.step_mask[:, :, t] = 0.0  # the new position becomes visible
            where = torch.full((1,), t, dtype=torch.long, device=tokens.device)
            logits = self.compiled(
                self.spec, self.head, tokens, self.next_pos, where, self.step_mask, self.rope, self.k_cache,
                self.v_cache,
            )  # fmt: skip
        self.length = t + 1
        self.next_pos = self.next_pos + 1
        return logits


def decode_step(
    spec: _Native,
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
    cos, sin = table[:, None, :rot], table[:, None, rot:]  # [B, 1, R]
    if isinstance(t, int):
        mask = mask[:, :, : t + 1]  # [B * KV, 1, T]
    x = F.embedding(tokens, spec.embed)  # [B, H]
    for i, layer in enumerate(spec.layers):
        if spec.family == "gpt_neox":
            x = _neox_step(spec, layer, x, cos, sin, mask, t, k_cache[i], v_cache[i])
        else:
            x = _llama_step(spec, layer, x, cos, sin, mask, t, k_cache[i], v_cache[i])
    return head(spec.final_norm(x)).float()


def _attend_step(
    spec: _Native,
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
    if isinstance(t, int):
        k_cache[:, :, t] = k
        v_cache[:, :, t] = v
        length = t + 1
    else:
        k_cache.index_copy_(2, t, k.unsqueeze(2))
        v_cache.index_copy_(2, t, v.unsqueeze(2))
        length = k_cache.shape[2]
    rows, capacity = batch * spec.num_kv_heads, k_cache.shape[2]
    keys = k_cache.view(rows, capacity, d)[:, :length]  # [B * KV, T, D]
    values = v_cache.view(rows, capacity, d)[:, :length]
    q3 = q.reshape(rows, spec.num_heads // spec.num_kv_heads, d)  # [B * KV, G, D]: a KV head's query heads
    scores = torch.baddbmm(mask, q3, keys.transpose(1, 2), alpha=d**-0.5)  # [B * KV, G, T]
    probs = scores.softmax(dim=-1, dtype=torch.float32).to(q.dtype)
    return torch.bmm(probs, values).view(batch, -1)  # [B, NH * D]


def _neox_step(
    spec: _Native,
    layer: _NeoxLayer,
    x: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    mask: torch.Tensor,
    t: int | torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
) -> torch.Tensor:
    rot = spec.rotary_dim
    qkv = layer.qkv(layer.ln1(x)).view(x.shape[0], spec.num_heads, 3, spec.head_dim)  # [B, NH, 3, D]
    qkv[:, :, :2, :rot] = _rotate(qkv[:, :, :2, :rot], cos[:, :, None], sin[:, :, None])
    attn = layer.dense(
        _attend_step(spec, qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], mask, t, k_cache, v_cache)
    )
    if layer.parallel:
        return layer.fc_out(layer.act(layer.fc_in(layer.ln2(x)))) + attn + x
    a = attn + x
    return layer.fc_out(layer.act(layer.fc_in(layer.ln2(a)))) + a


def _llama_step(
    spec: _Native,
    layer: _LlamaLayer,
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
    qk = _rotate(qkv[:, : (nh + kv) * d].view(batch, nh + kv, d), cos, sin)  # [B, NH + KV, D]
    v = qkv[:, (nh + kv) * d :].view(batch, kv, d)
    x = x + layer.o(_attend_step(spec, qk[:, :nh], qk[:, nh:], v, mask, t, k_cache, v_cache))
    gate, up = layer.gate_up(layer.norm2(x)).chunk(2, dim=-1)
    return x + layer.down(layer.act(gate) * up)


# ----------------------------------------------------------------------------- generic session


class _GenericSession:
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
