"""``LocalEngine``: the one owner of local generation.

It holds the model, its tokenizer, ONE prepared decoder (:mod:`.decode`), and the policies every
caller must agree on: which tokens end a generation, the context length and what happens to
prompts that do not fit. Every caller of local generation goes through it: :class:`LocalRunner`
(a thin adapter), evaluation, the benchmarks and ``llmrun serve``.

Three ways to generate:

- :meth:`LocalEngine.generate`: a :class:`~llmrun.runner.CompletionRequest` in, one
  :class:`~llmrun.runner.Completion` per prompt out (left-padded batches of ``max_batch_size``);
- :meth:`LocalEngine.stream`: text deltas of one prompt; generation runs as the iterator is read,
  and closing or dropping the iterator stops it (the model lock is held one step at a time);
- :meth:`LocalEngine.batch`: a step-level :class:`~llmrun.backends.local.stepping.EngineBatch`
  that rows join and leave between decode steps.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from llmrun.backends.local import decode as decoding
from llmrun.backends.local.quantize import check_quantize
from llmrun.backends.local.stepping import EngineBatch, Row
from llmrun.backends.local.text import TextDeltas, stop_sequence_hit, unstable_token_ids
from llmrun.checks import is_int_at_least
from llmrun.errors import (
    BatchError,
    ConfigurationError,
    InvalidInputError,
    LLMRunError,
    PromptTooLongError,
    UnsupportedFeatureError,
    name_item,
)
from llmrun.generation import GenerationConfig, cut_at_stop
from llmrun.runner import Completion, CompletionRequest, OutputSpec, Usage

__all__ = ["LocalEngine"]


class LocalEngine:
    """Generation on one local model; see the module doc.

    ``quantize``: ``"none"`` or ``"int8"`` (see :mod:`.quantize`). ``truncate_prompt``: drop the
    start of prompts that do not fit the context instead of raising
    :class:`~llmrun.errors.PromptTooLongError`. ``max_batch_size``: prompts per forward pass in
    :meth:`generate`.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        quantize: str = "none",
        truncate_prompt: bool = False,
        max_batch_size: int = 32,
    ) -> None:
        self.quantize = self.check_options(quantize=quantize, max_batch_size=max_batch_size)
        self.model: Any = model  # a transformers causal LM (an nn.Module)
        self.tokenizer = tokenizer
        self.truncate_prompt = bool(truncate_prompt)
        self.max_batch_size = max_batch_size
        #: Held while the model computes (one :meth:`generate` chunk, one batch step) or changes.
        self.lock = threading.RLock()
        self.prepared = self._prepare()
        #: Token ids that end a generation: the model's generation config's and the tokenizer's.
        self.eos_token_ids: frozenset[int] = _eos_ids(model, tokenizer)
        #: Ids at or past this are never generated (the embedding's padding past the vocabulary).
        self.vocab_size = len(tokenizer)
        self._unstable = unstable_token_ids(tokenizer)

    @staticmethod
    def check_options(*, quantize: object, max_batch_size: object) -> str:
        """Check the engine's options (:class:`~llmrun.errors.ConfigurationError`); the quantize mode."""
        if not is_int_at_least(max_batch_size, 1):
            raise ConfigurationError(f"max_batch_size={max_batch_size!r} is invalid: use a positive integer")
        try:
            return check_quantize(quantize)
        except InvalidInputError as exc:
            raise ConfigurationError(str(exc)) from None

    def __repr__(self) -> str:
        name = type(self.model).__name__
        return f"LocalEngine({name}, path={self.prepared.path!r}, quantize={self.quantize!r})"

    @property
    def device(self) -> torch.device:
        """Where the model's weights are."""
        device: torch.device = next(self.model.parameters()).device
        return device

    @property
    def context_length(self) -> int:
        """The most tokens (prompt plus new) the model can attend to."""
        config = self.model.config
        return int(getattr(config, "max_position_embeddings", None) or self.tokenizer.model_max_length)

    def refresh(self) -> None:
        """Prepare the decoder again now (after the weights were replaced, e.g. by a restore)."""
        with self.lock:
            self.prepared = self._prepare()

    # ------------------------------------------------------------------ tokens and text
    def encode(self, prompt: str, budget: int) -> list[int]:
        """The prompt's token ids, fitted to the context with room for ``budget`` new tokens."""
        return self.check_ids(self.tokenizer(prompt, add_special_tokens=True)["input_ids"], budget)

    def check_ids(self, ids: Sequence[int], budget: int) -> list[int]:
        """Fit token ids to the context (truncating their start when ``truncate_prompt``), or raise."""
        ids = [int(i) for i in ids]
        if not ids:
            raise InvalidInputError("the prompt has no tokens; every prompt needs at least one token")
        if any(i < 0 or i >= self.vocab_size for i in ids):
            raise InvalidInputError(
                f"the prompt holds token ids outside the vocabulary [0, {self.vocab_size})"
            )
        room = self.context_length - budget
        if len(ids) <= room:
            return ids
        if self.truncate_prompt and room > 0:
            return ids[len(ids) - room :]
        raise PromptTooLongError(
            f"the prompt has {len(ids)} tokens, and with max_new_tokens={budget} that exceeds the model's "
            f"context of {self.context_length} tokens; shorten the prompt, lower max_new_tokens, "
            "or pass truncate_prompt=True to drop the start of long prompts"
        )

    def decode(self, tokens: Sequence[int]) -> str:
        """The text of generated tokens, special tokens left out."""
        text: str = self.tokenizer.decode(list(tokens), skip_special_tokens=True)
        return text

    def text_deltas(self, stop: Sequence[str]) -> TextDeltas:
        """A tracker of streaming text deltas for one row generating with ``stop`` sequences."""
        return TextDeltas(self.decode, stop, self._unstable)

    def constraint(self, output: OutputSpec, batch_size: int, budget: int) -> Any:
        """The JSON grammar constraint for ``batch_size`` rows of ``output`` within ``budget`` tokens."""
        from llmrun.backends.local import grammar

        width = int(self.model.get_output_embeddings().weight.shape[0])
        return grammar.json_constraint(
            self.tokenizer, output.json_schema, batch_size, width, max_new_tokens=budget
        )

    # ------------------------------------------------------------------ generation
    def generate(self, request: CompletionRequest) -> list[Completion]:
        """One completion per prompt of ``request``, in order."""
        budget = request.max_new_tokens
        encoded = [
            self._encode_item(i, p, budget, len(request.prompts)) for i, p in enumerate(request.prompts)
        ]
        chunks = [
            range(i, min(i + self.max_batch_size, len(encoded)))
            for i in range(0, len(encoded), self.max_batch_size)
        ]
        results: list[Completion | None] = []
        failures: dict[int, BaseException] = {}
        for chunk in chunks:
            try:
                results += self.generate_ids(
                    [encoded[i] for i in chunk], request.config, budget, request.output
                )
            except LLMRunError as exc:  # this chunk failed; the others keep their completions
                if len(chunks) == 1:
                    raise
                failures.update(dict.fromkeys(chunk, exc))
                results += [None] * len(chunk)
        if failures:
            raise BatchError.of(failures, results)
        return [c for c in results if c is not None]

    def _encode_item(self, index: int, prompt: str, budget: int, count: int) -> list[int]:
        """:meth:`encode`; in a batch, the error names the prompt."""
        try:
            return self.encode(prompt, budget)
        except LLMRunError as exc:
            if count > 1:
                name_item(exc, [index])
            raise

    def generate_ids(
        self,
        batch: list[list[int]],
        config: GenerationConfig,
        budget: int,
        output: OutputSpec | None = None,
    ) -> list[Completion]:
        """Completions of prompts given as token ids (fitted already), run as one left-padded batch."""
        input_ids, attention_mask = decoding.left_pad(batch, device=self.device)
        constraint = self.constraint(output, len(batch), budget) if output is not None else None
        should_stop = None
        if config.stop:

            def should_stop(row: int, tokens: list[int]) -> bool:
                return stop_sequence_hit(self.decode, tokens, config.stop)

        with self.lock:
            new_tokens = decoding.generate_tokens(
                self.prepared,
                input_ids,
                attention_mask,
                max_new_tokens=budget,
                config=config,
                eos_token_ids=self.eos_token_ids,
                constraint=constraint,
                should_stop=should_stop,
                vocab_size=self.vocab_size,
            )
        closed = constraint.finished() if constraint is not None else [False] * len(batch)
        completions = []
        for prompt_ids, tokens, json_closed in zip(batch, new_tokens, closed, strict=True):
            full = self.decode(tokens)
            text = cut_at_stop(full, config.stop)
            # fewer tokens than the budget means an end-of-sequence token, a stop sequence or closed JSON
            stopped = len(tokens) < budget or json_closed or len(text) < len(full)
            usage = Usage(prompt_tokens=len(prompt_ids), completion_tokens=len(tokens))
            completions.append(Completion(text, "stop" if stopped else "length", usage))
        return completions

    def stream(self, request: CompletionRequest) -> Iterator[str]:
        """Text deltas of the one prompt of ``request``; they join to its completion's text.

        The prompt is checked now; tokens are generated as the iterator is read, one step per
        lock, so closing or dropping the iterator stops generation at once.
        """
        if len(request.prompts) != 1:
            raise InvalidInputError("stream() takes a request with exactly one prompt")
        batch = self.batch()
        row = batch.add(request.prompts[0], request.config, request.output)
        return _drive(batch, row)

    def batch(self) -> EngineBatch:
        """A new step-level batch on this engine (see :mod:`.stepping`)."""
        return EngineBatch(self)

    # ------------------------------------------------------------------ helpers
    def _prepare(self) -> decoding.PreparedModel:
        try:
            return decoding.prepare_model_for_decoding(self.model, quantize=self.quantize)
        except UnsupportedFeatureError as exc:
            raise ConfigurationError(str(exc)) from None


def _drive(batch: EngineBatch, row: Row) -> Iterator[str]:
    """Step ``batch`` while ``row`` runs, yielding its stable text; always frees the batch."""
    try:
        while not row.done:
            batch.step()
            if row.error is not None:
                raise row.error
            piece = row.text_delta()
            if piece:
                yield piece
    finally:
        batch.close()


def _eos_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    config = getattr(model, "generation_config", None)
    ids = getattr(config, "eos_token_id", None) if config is not None else None
    found = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
    if tokenizer.eos_token_id is not None:
        found.add(tokenizer.eos_token_id)
    return frozenset(int(i) for i in found)
