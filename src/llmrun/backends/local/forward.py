"""Preparing a model for the decode loop: :func:`build_decoder` -> :class:`Decoder` -> :class:`Session`.

A session runs one prompt pass, then one token per step, and returns the logits of the last
position only. Two kinds, both behind :class:`Session`:

- **native** (:mod:`.native`; ``gpt_neox`` and ``llama`` models built from plain ``nn.Linear``
  layers): a gpt-fast-style forward over the model's own weights with a preallocated KV cache.
  It computes what transformers computes, in the same order, so float32 greedy tokens match.
- **generic** (:mod:`.generic`; any other ``AutoModelForCausalLM``, or a model wrapped by e.g.
  peft): the transformers base model with its own cache.

The linear layers and the LM head run through :mod:`.kernels`, whose extra CPU weight layouts
are made once, here, when the model is prepared.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import torch
from torch import nn

from llmrun.backends.local.generic import GenericSession
from llmrun.backends.local.kernels import Linear, LinearFactory, LinearKernel, float_linears
from llmrun.backends.local.native import (
    LayerNorm,
    LlamaLayer,
    NativeSession,
    NativeSpec,
    NeoxLayer,
    RMSNorm,
    decode_step,
)
from llmrun.backends.local.screened_head import ScreenedHead, can_screen

__all__ = ["Decoder", "Session", "build_decoder"]

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
    native: NativeSpec | None = None
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
            return NativeSession(
                self.native,
                head,
                input_ids,
                attention_mask,
                max_new_tokens,
                self.dtype,
                self.compiled_step,
            )
        return GenericSession(self, input_ids, attention_mask)

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
            from llmrun.backends.local.cpu_kernels import screened_head_class  # by what the CPU has

            screen = screened_head_class()(module.weight, module.bias, vocab, full)
            self.screens[vocab] = screen
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
    compile: bool | str = False,
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
        spec = _build_native(hf, base, model_type, float_linears(layouts))
        if spec is not None:
            mode = compile if isinstance(compile, str) else None  # e.g. "reduce-overhead": CUDA graphs
            compiled = torch.compile(decode_step, fullgraph=True, mode=mode) if compile else None
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
    from llmrun.backends.local.cpu_kernels import int8_linears
    from llmrun.errors import UnsupportedFeatureError

    device = next(model.parameters()).device
    if device.type != "cpu":
        raise UnsupportedFeatureError(
            f"quantize='int8' is a CPU fast path, but the model is on {device}; "
            "on a GPU use dtype='bfloat16' (or float16) instead"
        )
    make = int8_linears()  # the kernel this CPU runs fastest (:mod:`.cpu_kernels`)
    spec = _build_native(hf, base, model_type, make, fold_norms=True) if head_module is not None else None
    if spec is None:
        raise UnsupportedFeatureError(
            f"quantize='int8' needs llmrun's own forward (gpt_neox or llama models built from plain "
            f"nn.Linear layers); this {type(model).__name__} ({model_type or 'unknown type'}) runs through "
            "transformers' forward, so use quantize='none'"
        )
    return Decoder(weakref.ref(model), make([head_module]), base, fingerprint, native=spec)


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


def _build_native(
    model: Any, base: Any, model_type: str, make: LinearFactory, *, fold_norms: bool = False
) -> NativeSpec | None:
    """The native forward's weights, or None where the model is not one it computes exactly.

    ``fold_norms`` (int8 only: it changes float32's rounding): the norms' scales (and shifts) move
    into the next linear layers' weights, so a step makes fewer ops (:func:`_fold_norm`).
    """
    config = model.config
    embed = getattr(base, "embed_in" if model_type == "gpt_neox" else "embed_tokens", None)
    rotary = getattr(base, "rotary_emb", None)
    if type(embed) is not nn.Embedding or not isinstance(rotary, nn.Module):
        return None
    if getattr(rotary, "rope_type", "default") not in _STATIC_ROPE_TYPES:
        return None
    if model_type == "gpt_neox":
        return _build_neox(config, base, embed, rotary, make, fold_norms)
    if model_type == "llama":
        return _build_llama(config, base, embed, rotary, make, fold_norms)
    return None


def _fold_norm(linear: nn.Linear, scale: torch.Tensor | None, shift: torch.Tensor | None) -> nn.Linear:
    """``linear(norm * scale + shift)`` as one linear of ``norm``: ``W diag(scale)``, ``b + W shift``."""
    weight = linear.weight.detach().double()  # [O, I]
    bias = linear.bias.detach().double() if linear.bias is not None else weight.new_zeros(weight.shape[0])
    if shift is not None:
        bias = bias + weight @ shift.detach().double()
    if scale is not None:
        weight = weight * scale.detach().double()
    has_bias = linear.bias is not None or shift is not None
    out = nn.Linear(weight.shape[1], weight.shape[0], bias=has_bias, device="meta")  # no random init
    out.weight = nn.Parameter(weight.to(linear.weight.dtype), requires_grad=False)
    if out.bias is not None:
        out.bias = nn.Parameter(bias.to(linear.weight.dtype), requires_grad=False)
    return out


def _joined(first: nn.Linear, second: nn.Linear) -> nn.Linear:
    """``first(a) + second(b)`` as one linear of ``[a, b]`` (inputs concatenated, biases summed)."""
    weight = torch.cat([first.weight.detach(), second.weight.detach()], dim=1)
    has_bias = first.bias is not None or second.bias is not None
    out = nn.Linear(weight.shape[1], weight.shape[0], bias=has_bias, device="meta")  # no random init
    out.weight = nn.Parameter(weight, requires_grad=False)
    if out.bias is not None:
        bias = sum(lin.bias.detach() for lin in (first, second) if lin.bias is not None)
        out.bias = nn.Parameter(torch.as_tensor(bias), requires_grad=False)
    return out


def _build_neox(
    config: Any, base: Any, embed: nn.Embedding, rotary: nn.Module, make: LinearFactory, fold_norms: bool
) -> NativeSpec | None:
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
        ln1, ln2 = (LayerNorm.of(n) for n in norms)
        if fold_norms and layer.use_parallel_residual and ln1.eps == ln2.eps:
            # both branches read the same x: one bare norm, one matmul for q/k/v and the MLP's
            # input, one for the MLP's output and the attention's projection (see NeoxLayer)
            qkv = make(
                [_fold_norm(linears[0], ln1.weight, ln1.bias), _fold_norm(linears[2], ln2.weight, ln2.bias)]
            )
            bare = LayerNorm(None, None, ln1.eps, ln1.width)
            out = _joined(mlp.dense_4h_to_h, att.dense)
            layers.append(NeoxLayer(bare, bare, qkv, None, None, make([out]), mlp.act.forward, True))
            rotary_dim = int(att.rotary_ndims)
            continue
        qkv, dense, fc_in, fc_out = (make([lin]) for lin in linears)
        layers.append(
            NeoxLayer(ln1, ln2, qkv, dense, fc_in, fc_out, mlp.act.forward, bool(layer.use_parallel_residual))
        )
        rotary_dim = int(att.rotary_ndims)
    heads = int(config.num_attention_heads)
    return NativeSpec(
        "gpt_neox", layers, embed.weight.detach(), LayerNorm.of(final), rotary,
        heads, heads, int(config.hidden_size) // heads, rotary_dim,
    )  # fmt: skip


def _build_llama(
    config: Any, base: Any, embed: nn.Embedding, rotary: nn.Module, make: LinearFactory, fold_norms: bool
) -> NativeSpec | None:
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
        norm1, norm2 = RMSNorm.of(norms[0]), RMSNorm.of(norms[1])
        qkv, gate_up = [att.q_proj, att.k_proj, att.v_proj], [mlp.gate_proj, mlp.up_proj]
        if fold_norms:  # the norms' scales move into q/k/v's and gate/up's weights: one op less each
            qkv = [_fold_norm(lin, norm1.weight, None) for lin in qkv]
            gate_up = [_fold_norm(lin, norm2.weight, None) for lin in gate_up]
            norm1, norm2 = RMSNorm(None, norm1.eps), RMSNorm(None, norm2.eps)
        layers.append(
            LlamaLayer(
                norm1,
                norm2,
                make(qkv),
                make([att.o_proj]),
                make(gate_up),
                make([mlp.down_proj]),
                mlp.act_fn.forward,
            )
        )
        head_dim = int(att.head_dim)
    return NativeSpec(
        "llama", layers, embed.weight.detach(), RMSNorm.of(final), rotary,
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
