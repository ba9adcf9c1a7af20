"""The local backend's decode loop: ``prefill`` -> ``decode_one_token`` -> ``decode_tokens``.

:func:`generate_tokens` continues a left-padded batch of prompts with a Hugging Face causal LM
and returns each row's new tokens. It is the fast replacement for ``model.generate``:

- the model is prepared once (:func:`prepare_model_for_decoding`): LM head weights in the
  layouts the CPU multiplies fastest, and for ``gpt_neox``/``llama`` models a lean forward over
  the model's own weights with a preallocated KV cache (see :mod:`.forward`);
- logits are computed for the last position only, under ``torch.inference_mode``;
- rows that finish leave the batch, so stragglers do not pay for finished rows.

In float32 its greedy tokens equal ``model.generate(do_sample=False)``'s, for single prompts
and left-padded batches alike. Sampling (:mod:`.sampling`) is seeded by ``GenerationConfig.seed``.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from collections.abc import Set as AbstractSet
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from llmrun.backends.local.forward import Decoder, Session, build_decoder
from llmrun.backends.local.quantize import check_quantize
from llmrun.backends.local.sampling import Sampler
from llmrun.checks import is_int_at_least
from llmrun.errors import InvalidInputError
from llmrun.generation import GenerationConfig

#: ``torch.compile`` modes ``compile=`` accepts as a string.
_COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")

__all__ = [
    "PreparedModel",
    "TokenConstraint",
    "decode_one_token",
    "decode_tokens",
    "eval_mode",
    "generate_tokens",
    "left_pad",
    "prefill",
    "prepare_model_for_decoding",
]


@runtime_checkable
class TokenConstraint(Protocol):
    """Restricts which tokens each row may choose (e.g. a JSON grammar); one object per batch.

    The loop calls ``mask_logits`` -> picks tokens -> ``advance`` -> ``finished`` every step.
    ``finished`` always reports every row of the original batch. A constraint that also has
    ``select_rows(index)`` lets stopped rows leave the batch: after that call ``mask_logits`` and
    ``advance`` see only the kept rows (``index``: their positions in the previous batch). One
    without it sees the whole batch every step, stopped rows included.
    """

    def mask_logits(self, logits: torch.Tensor) -> None:
        """Set disallowed tokens of this step's logits ``[B, V]`` to ``-inf``, in place."""
        ...

    def advance(self, tokens: torch.Tensor) -> None:
        """Take each row's chosen token ``[B]``; it may replace a row's token in place (the loop
        reads ``tokens`` after this call)."""
        ...

    def finished(self) -> list[bool]:
        """Per row: the constraint is complete and the row must stop."""
        ...


class PreparedModel:
    """A causal LM prepared for :func:`generate_tokens`; build with :func:`prepare_model_for_decoding`.

    The prepared copies of weights are rebuilt automatically when the model's modules change
    (peft adapters) or its weights change through tracked in-place ops. Fused optimizer steps
    (``AdamW(fused=True)``, which local training uses) do not bump the weights' version counters:
    after such updates, prepare again (:meth:`LocalEngine.refresh
    <llmrun.backends.local.engine.LocalEngine.refresh>` does), as training does before it answers.
    It keeps the model alive unless ``weak`` (used for the per-model cache of raw models).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        native: bool,
        layouts: bool | None,
        head_dtype: torch.dtype | None,
        compile: bool | str,
        quantize: str = "none",
        weak: bool = False,
    ) -> None:
        self._model_ref = weakref.ref(model)
        self._strong = None if weak else model
        self.native = native
        self.layouts = layouts
        self.head_dtype = head_dtype
        self.compile = compile
        self.quantize = quantize
        self._lock = threading.Lock()
        self._decoder = self._build()

    @property
    def model(self) -> nn.Module:
        """The causal LM this was prepared for."""
        model = self._model_ref()
        if model is None:
            raise ReferenceError("the model this was prepared for no longer exists")
        return model

    def _build(self) -> Decoder:
        with torch.inference_mode():
            return build_decoder(
                self.model,
                native=self.native,
                layouts=self.layouts,
                head_dtype=self.head_dtype,
                compile=self.compile,
                quantize=self.quantize,
            )

    @property
    def path(self) -> str:
        """Which forward runs: ``"gpt_neox"`` or ``"llama"`` (native) or ``"generic"`` (transformers)."""
        return self.decoder().family

    def decoder(self) -> Decoder:
        """The current prepared state, rebuilt first if the model changed."""
        with self._lock:
            if not self._decoder.is_current():
                self._decoder = self._build()
            return self._decoder

    def __repr__(self) -> str:
        return f"PreparedModel({type(self._model_ref()).__name__}, path={self._decoder.family!r})"


def prepare_model_for_decoding(
    model: nn.Module,
    *,
    native: bool = True,
    extra_layouts: bool | None = None,
    head_dtype: torch.dtype | None = None,
    compile: bool | str = False,
    quantize: str | None = "none",
) -> PreparedModel:
    """Prepare ``model`` (a transformers causal LM) once, at load time, for fast decoding.

    ``native``: use llmrun's own forward for ``gpt_neox`` and ``llama`` models built from plain
    ``nn.Linear`` layers (other models always use transformers' forward).
    ``extra_layouts``: on the CPU in float32, keep extra copies of the weights in faster layouts
    (about 1.5x the linear weights' memory more); ``None`` does so for models up to 2 GiB.
    ``head_dtype``: run the LM head in this dtype, e.g. ``torch.bfloat16``; this changes the
    logits slightly, so greedy tokens may differ from float32's. Off by default.
    ``compile``: opt-in ``torch.compile`` of the native decode step over a static-shape KV cache.
    Each new batch size and cache length compiles first (tens of seconds on a small CPU), so it
    pays off only for long-running servers; finished rows then stay in the batch. A string is
    ``torch.compile``'s mode, e.g. ``"reduce-overhead"`` (CUDA graphs on a GPU).
    ``quantize="int8"``: opt-in int8 weights (one scale per output channel) for every linear layer
    and the LM head, activations rounded to bfloat16 at those matmuls (:mod:`.quantize`). About
    1.5x faster than float32 at batch 1 on a bandwidth-bound CPU, slower at batch 32; it changes
    the logits, so greedy tokens can differ from float32's. CPU only, native forward only
    (gpt_neox/llama), else :class:`~llmrun.errors.UnsupportedFeatureError`.
    """
    if not isinstance(model, nn.Module):
        raise InvalidInputError(f"expected a torch causal LM (nn.Module), got {type(model).__name__}")
    if head_dtype is not None and not (isinstance(head_dtype, torch.dtype) and head_dtype.is_floating_point):
        raise InvalidInputError(f"head_dtype={head_dtype!r} is invalid: use a floating torch dtype or None")
    quantize = check_quantize(quantize)
    if quantize != "none" and head_dtype is not None:
        raise InvalidInputError(
            f"head_dtype={head_dtype} and quantize={quantize!r} both set the LM head's weights; pass only one"
        )
    if isinstance(compile, str) and compile not in _COMPILE_MODES:
        raise InvalidInputError(
            f"compile={compile!r}: use True, False or a torch.compile mode {_COMPILE_MODES}"
        )
    if quantize != "none" and compile:
        raise InvalidInputError(f"compile=True with quantize={quantize!r} is not supported; pass one of them")
    return PreparedModel(
        model,
        native=native,
        layouts=extra_layouts,
        head_dtype=head_dtype,
        compile=compile if isinstance(compile, str) else bool(compile),
        quantize=quantize,
    )


_PREPARED: weakref.WeakKeyDictionary[nn.Module, PreparedModel] = weakref.WeakKeyDictionary()
_PREPARED_LOCK = threading.Lock()


def _prepared(model: nn.Module | PreparedModel) -> PreparedModel:
    if isinstance(model, PreparedModel):
        return model
    with _PREPARED_LOCK:
        found = _PREPARED.get(model)
        if found is None:
            found = _PREPARED[model] = PreparedModel(
                model, native=True, layouts=None, head_dtype=None, compile=False, weak=True
            )
        return found


# ----------------------------------------------------------------------------- the loop


def prefill(session: Session) -> torch.Tensor:
    """Run the prompts through the model; float32 logits of each row's last position ``[B, V]``."""
    return session.prefill()


def decode_one_token(session: Session, tokens: torch.Tensor) -> torch.Tensor:
    """The hot step: feed one token per row ``[B]``, get the next logits ``[B, V]``."""
    return session.step(tokens)


def decode_tokens(
    session: Session,
    logits: torch.Tensor,
    sampler: Sampler,
    *,
    max_new_tokens: int,
    eos_token_ids: AbstractSet[int],
    constraint: TokenConstraint | None = None,
    should_stop: Callable[[int, list[int]], bool] | None = None,
    on_step: Callable[[torch.Tensor], None] | None = None,
    vocab_size: int | None = None,
) -> list[list[int]]:
    """Choose tokens from ``logits`` ``[B, V]`` (the prefill's) and step until every row stops.

    A row stops at an EOS token (not returned), when ``should_stop(row, tokens)`` is true, when the
    constraint reports it finished, or after ``max_new_tokens``. Stopped rows leave the session's
    batch, unless the constraint cannot select rows (see :class:`TokenConstraint`).
    ``on_step`` gets each step's tokens ``[B]`` for the full batch, ``-1`` for rows already stopped.
    Ids at or past ``vocab_size`` are never chosen.
    """
    batch = logits.shape[0]
    outputs: list[list[int]] = [[] for _ in range(batch)]
    done = [False] * batch
    active = list(range(batch))  # original row of each row in the session's batch
    select_constraint_rows = getattr(constraint, "select_rows", None)
    shrink = session.can_select_rows and (constraint is None or callable(select_constraint_rows))
    for step in range(max_new_tokens):
        if constraint is not None:
            constraint.mask_logits(logits)
        if vocab_size is not None and vocab_size < logits.shape[1]:
            logits[:, vocab_size:] = float("-inf")
        tokens = sampler.choose(logits)  # [b]
        if sampler.greedy:
            tokens = session.refine_argmax(logits, tokens)
        if constraint is not None:
            constraint.advance(tokens)
        sampler.record(tokens)
        ids: list[int] = tokens.tolist()
        if on_step is not None:
            on_step(_full_batch(tokens, active, done, batch))
        constraint_done = constraint.finished() if constraint is not None else None
        for row, token in zip(active, ids, strict=True):
            if done[row]:
                continue
            if token in eos_token_ids:
                done[row] = True
                continue
            outputs[row].append(token)
            if (
                (constraint_done is not None and constraint_done[row])
                or (should_stop is not None and should_stop(row, outputs[row]))
                or len(outputs[row]) >= max_new_tokens
            ):
                done[row] = True
        if all(done) or step == max_new_tokens - 1:
            break
        if shrink and any(done[row] for row in active):
            keep = [j for j, row in enumerate(active) if not done[row]]
            index = torch.tensor(keep, dtype=torch.long, device=tokens.device)
            session.select_rows(index)
            sampler.select_rows(index)
            if select_constraint_rows is not None:
                select_constraint_rows(index)
            tokens = tokens.index_select(0, index)
            active = [active[j] for j in keep]
        logits = decode_one_token(session, tokens)
    return outputs


def _full_batch(tokens: torch.Tensor, active: list[int], done: list[bool], batch: int) -> torch.Tensor:
    """This step's tokens ``[B]`` for the original batch; ``-1`` where a row had stopped."""
    if len(active) == batch and not any(done):
        return tokens
    full = torch.full((batch,), -1, dtype=tokens.dtype, device=tokens.device)
    full[torch.tensor(active, device=tokens.device)] = tokens
    stopped = [row for row in active if done[row]]
    if stopped:
        full[torch.tensor(stopped, device=tokens.device)] = -1
    return full


@torch.inference_mode()
def generate_tokens(
    model: nn.Module | PreparedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    max_new_tokens: int,
    config: GenerationConfig,
    eos_token_ids: AbstractSet[int] | Sequence[int],
    constraint: TokenConstraint | None = None,
    should_stop: Callable[[int, list[int]], bool] | None = None,
    on_step: Callable[[torch.Tensor], None] | None = None,
    vocab_size: int | None = None,
) -> list[list[int]]:
    """Generate up to ``max_new_tokens`` new tokens for each row of a left-padded batch.

    ``model``: a transformers causal LM or, better, its :func:`prepare_model_for_decoding` result
    (a raw model is prepared on first use and the result cached). ``input_ids`` and
    ``attention_mask`` are ``[B, S]``, padded on the left (mask 0 on pads; the pad id is
    arbitrary). ``config`` gives temperature (0: greedy), top_k, top_p, repetition_penalty and
    seed. Returns per row its new tokens, without the EOS token. See :func:`decode_tokens` for
    how rows stop and what ``on_step`` receives. ``vocab_size``: ids at or past it are never
    chosen (the embedding's padding past the tokenizer's vocabulary, which decodes to nothing).

    Greedy calls without a repetition penalty read only each row's argmax, so on the CPU in
    float32 the LM head is screened (:mod:`.screened_head`): same tokens, fewer bytes.
    """
    prepared = _prepared(model)
    decoder = prepared.decoder()
    if not is_int_at_least(max_new_tokens, 1):
        raise InvalidInputError(f"max_new_tokens={max_new_tokens!r} is invalid: use a positive integer")
    if not isinstance(config, GenerationConfig):
        raise InvalidInputError(f"config must be a llmrun GenerationConfig, got {type(config).__name__}")
    if vocab_size is not None and not is_int_at_least(vocab_size, 1):
        raise InvalidInputError(f"vocab_size={vocab_size!r} is invalid: use a positive integer or None")
    input_ids, attention_mask = _checked_batch(input_ids, attention_mask, decoder)
    eos = {int(t) for t in eos_token_ids} if eos_token_ids is not None else set()
    with eval_mode(decoder.model):
        argmax_only = config.greedy and config.repetition_penalty == 1.0
        session = decoder.start(
            input_ids, attention_mask, max_new_tokens, argmax_only=argmax_only, vocab_size=vocab_size
        )
        sampler = Sampler(config, input_ids, attention_mask, max_new_tokens)
        logits = prefill(session)
        return decode_tokens(
            session,
            logits,
            sampler,
            max_new_tokens=max_new_tokens,
            eos_token_ids=eos,
            constraint=constraint,
            should_stop=should_stop,
            on_step=on_step,
            vocab_size=vocab_size,
        )


def _checked_batch(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, decoder: Decoder
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate a left-padded batch; returns it on the model's device, pad ids replaced by 0."""
    if not isinstance(input_ids, torch.Tensor) or not isinstance(attention_mask, torch.Tensor):
        raise InvalidInputError("input_ids and attention_mask must be torch tensors of shape [batch, length]")
    if input_ids.dim() != 2 or input_ids.shape[0] == 0 or input_ids.shape[1] == 0:
        raise InvalidInputError(
            f"input_ids must have shape [batch, length] with both at least 1, got {tuple(input_ids.shape)}"
        )
    if attention_mask.shape != input_ids.shape:
        raise InvalidInputError(
            f"attention_mask has shape {tuple(attention_mask.shape)}, "
            f"but input_ids has {tuple(input_ids.shape)}; they must match"
        )
    if input_ids.dtype.is_floating_point or input_ids.dtype == torch.bool:
        raise InvalidInputError(f"input_ids must hold integer token ids, got dtype {input_ids.dtype}")
    device = decoder.device
    input_ids = input_ids.to(device=device, dtype=torch.long)
    mask = attention_mask.to(device=device).long()
    if bool(((mask != 0) & (mask != 1)).any()):
        raise InvalidInputError("attention_mask must hold only 0 (padding) and 1 (token)")
    if bool((mask[:, 1:] < mask[:, :-1]).any()):
        raise InvalidInputError(
            "the batch is not left-padded: in some row a 0 of attention_mask follows a 1; "
            "put the padding before each prompt"
        )
    if bool((mask[:, -1] == 0).any()):
        empty = [int(r) for r in torch.nonzero(mask[:, -1] == 0).flatten().tolist()]
        raise InvalidInputError(
            f"row(s) {empty} have no tokens at all; every prompt needs at least one token"
        )
    vocab = _vocab_rows(decoder)
    real = input_ids[mask.bool()]
    if vocab is not None and bool(((real < 0) | (real >= vocab)).any()):
        raise InvalidInputError(f"input_ids hold token ids outside the model's vocabulary [0, {vocab})")
    return input_ids.masked_fill(mask == 0, 0), mask


def _vocab_rows(decoder: Decoder) -> int | None:
    get = getattr(decoder.model, "get_input_embeddings", None)
    embedding = get() if callable(get) else None
    weight = getattr(embedding, "weight", None)
    return int(weight.shape[0]) if isinstance(weight, torch.Tensor) else None


def left_pad(
    rows: Sequence[Sequence[int]], pad: int = 0, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id lists as a left-padded batch: ``input_ids`` and ``attention_mask``, both ``[B, S]``."""
    width = max(len(ids) for ids in rows)
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)  # [B, S]
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)  # [B, S]
    for row, ids in enumerate(rows):
        input_ids[row, width - len(ids) :] = torch.tensor(list(ids), dtype=torch.long)
        attention_mask[row, width - len(ids) :] = 1
    return input_ids.to(device), attention_mask.to(device)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Decode without dropout; a model in training mode is put back in it afterwards."""
    training = model.training
    if training:
        model.eval()
    try:
        yield
    finally:
        if training:
            model.train()
