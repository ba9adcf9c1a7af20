"""``LocalRunner``: a Hugging Face causal LM on this machine's CPU or GPU."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import torch

from llmrun.backends.local import decode
from llmrun.backends.local.loading import LoadSettings, load_model_and_tokenizer
from llmrun.backends.local.quantize import check_quantize
from llmrun.errors import (
    ConfigurationError,
    InvalidInputError,
    PromptTooLongError,
    UnsupportedFeatureError,
)
from llmrun.generation import GenerationConfig
from llmrun.runner import Capabilities, Completion, CompletionRequest, ModelRunner, OutputSpec, Usage
from llmrun.training import EvalResult, TrainingExample, TrainOptions, TrainResult


class LocalRunner(ModelRunner):
    """Run a transformers causal LM locally.

    Options: ``device`` (``auto``: CUDA if present, else CPU), ``dtype``
    (``auto``: float32 on CPU, bfloat16/float16 on CUDA), ``trust_remote_code``,
    ``allow_pickle`` (load ``.bin`` weights), ``revision``, ``cache_dir``,
    ``max_batch_size`` (prompts per forward pass), ``truncate_prompt``
    (drop the start of prompts that do not fit the context instead of failing),
    ``runs_dir`` (where :meth:`train` writes its run directories),
    ``progress`` (show a progress bar while training) and ``quantize``
    (``none``, or ``int8``: int8 weights in the CPU decode loop, faster at small
    batches, changes numerics; see the speed guide).
    """

    backend_name: ClassVar[str] = "local"
    capabilities: ClassVar[Capabilities] = Capabilities(streams=True, trains=True)

    def __init__(
        self,
        model_name: str,
        *,
        generation: GenerationConfig | None = None,
        template: str | None = None,
        device: str = "auto",
        dtype: str = "auto",
        trust_remote_code: bool = False,
        allow_pickle: bool = False,
        revision: str | None = None,
        cache_dir: str | None = None,
        max_batch_size: int = 32,
        truncate_prompt: bool = False,
        runs_dir: str = "llmrun-runs",
        progress: bool = True,
        quantize: str = "none",
    ) -> None:
        super().__init__(model_name, generation=generation, template=template)
        if isinstance(max_batch_size, bool) or not isinstance(max_batch_size, int) or max_batch_size < 1:
            raise ConfigurationError(f"max_batch_size={max_batch_size!r} is invalid: use a positive integer")
        self.max_batch_size = max_batch_size
        try:
            self.quantize = check_quantize(quantize)
        except InvalidInputError as exc:
            raise ConfigurationError(str(exc)) from None
        self.truncate_prompt = bool(truncate_prompt)
        self.runs_dir = Path(runs_dir)
        self.progress = bool(progress)
        self._train_options: TrainOptions | None = None
        self.settings = LoadSettings(device, dtype, trust_remote_code, allow_pickle, revision, cache_dir)
        self.model, self.tokenizer, self.device = load_model_and_tokenizer(model_name, self.settings)
        self._decoder = self._prepared_decoder()
        self._lock = threading.Lock()
        self._unstable_ids = _unstable_token_ids(self.tokenizer)

    @property
    def context_length(self) -> int:
        """The most tokens (prompt plus new) the model can attend to."""
        config = self.model.config
        return int(getattr(config, "max_position_embeddings", None) or self.tokenizer.model_max_length)

    @property
    def eos_token_ids(self) -> set[int]:
        """Token ids that end a generation."""
        ids = self.model.generation_config.eos_token_id if self.model.generation_config else None
        found = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
        if self.tokenizer.eos_token_id is not None:
            found.add(self.tokenizer.eos_token_id)
        return found

    # ------------------------------------------------------------------ contract
    def complete(self, request: CompletionRequest) -> list[Completion]:
        budget = request.max_new_tokens
        encoded = [self._encode(p, budget) for p in request.prompts]
        completions: list[Completion] = []
        for start in range(0, len(encoded), self.max_batch_size):
            chunk = encoded[start : start + self.max_batch_size]
            completions += self._generate_batch(chunk, request.config, budget, request.output)
        return completions

    def stream_completion(self, request: CompletionRequest) -> Iterator[str]:
        if len(request.prompts) != 1:
            raise InvalidInputError("stream_completion() takes a request with exactly one prompt")
        config, budget, output = request.config, request.max_new_tokens, request.output
        ids = self._encode(request.prompts[0], budget)
        steps: queue.Queue[int | BaseException | None] = queue.Queue()

        def on_step(tokens: torch.Tensor) -> None:
            steps.put(int(tokens[0]))

        def work() -> None:
            try:
                self._generate_batch([ids], config, budget, output, on_step=on_step)
                steps.put(None)
            except BaseException as exc:  # handed to the consuming thread
                steps.put(exc)

        threading.Thread(target=work, daemon=True).start()
        return _stream_text(steps, self._decode_tokens, config.stop, self.eos_token_ids, self._unstable_ids)

    def train_examples(self, examples: list[TrainingExample], options: TrainOptions) -> TrainResult:
        """Fine-tune in place into a run directory under ``runs_dir``; then answer with the tuned model."""
        from llmrun.backends.local.training import train_local

        run_dir = self._run_dir(options)
        with self._lock:
            result = train_local(
                self.model, self.tokenizer, examples, options, run_dir, progress=self.progress
            )
            self._decoder = self._prepared_decoder()  # the weights changed
        self._train_options = options
        self.model_name = result.model_name
        return result

    def evaluate_examples(self, examples: list[TrainingExample]) -> EvalResult:
        """Held-out loss, perplexity, exact match and samples, on the split training used."""
        from llmrun.backends.local.evaluation import evaluate_local

        with self._lock:
            return evaluate_local(self.model, self.tokenizer, examples, self._train_options)

    def _run_dir(self, options: TrainOptions) -> Path:
        """A new run directory, or with ``resume`` the newest one of this model."""
        from llmrun.backends.local.training import new_run_dir

        fresh = new_run_dir(self.runs_dir, self.model_name)
        if options.resume:
            stem = fresh.name.rsplit("-", 2)[0]
            earlier = sorted(p for p in self.runs_dir.glob(f"{stem}-*") if p.is_dir())
            if earlier:
                return earlier[-1]
        return fresh

    # ------------------------------------------------------------------ helpers
    def _prepared_decoder(self) -> decode.PreparedModel:
        try:
            return decode.prepare_model_for_decoding(self.model, quantize=self.quantize)
        except UnsupportedFeatureError as exc:
            raise ConfigurationError(str(exc)) from None

    def _encode(self, prompt: str, budget: int) -> list[int]:
        ids: list[int] = self.tokenizer(prompt, add_special_tokens=True)["input_ids"]
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

    def _generate_batch(
        self,
        batch: list[list[int]],
        config: GenerationConfig,
        budget: int,
        output: OutputSpec | None,
        on_step: Callable[[torch.Tensor], None] | None = None,
    ) -> list[Completion]:
        input_ids, attention_mask = self._left_pad(batch)
        constraint = self._constraint(output, len(batch), budget) if output is not None else None
        should_stop = self._stop_checker(config.stop) if config.stop else None
        with self._lock:
            new_tokens = decode.generate_tokens(
                self._decoder,
                input_ids,
                attention_mask,
                max_new_tokens=budget,
                config=config,
                eos_token_ids=self.eos_token_ids,
                constraint=constraint,
                should_stop=should_stop,
                on_step=on_step,
                vocab_size=len(self.tokenizer),  # never the embedding's padding ids, which decode to nothing
            )
        closed = constraint.finished() if constraint is not None else [False] * len(batch)
        completions = []
        for prompt_ids, tokens, json_closed in zip(batch, new_tokens, closed, strict=True):
            full = self._decode_tokens(tokens)
            text = _cut_at_stop(full, config.stop)
            # fewer tokens than the budget means an EOS, a stop sequence or the JSON closed it
            stopped = len(tokens) < budget or json_closed or len(text) < len(full)
            usage = Usage(prompt_tokens=len(prompt_ids), completion_tokens=len(tokens))
            completions.append(Completion(text, "stop" if stopped else "length", usage))
        return completions

    def _left_pad(self, batch: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(ids) for ids in batch)
        pad = int(self.tokenizer.pad_token_id)
        input_ids = torch.full((len(batch), width), pad, dtype=torch.long)  # [B, S]
        attention_mask = torch.zeros((len(batch), width), dtype=torch.long)  # [B, S]
        for row, ids in enumerate(batch):
            input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, width - len(ids) :] = 1
        return input_ids.to(self.device), attention_mask.to(self.device)

    def _constraint(self, output: OutputSpec, batch_size: int, budget: int) -> Any:
        from llmrun.backends.local import grammar

        vocab_size = int(self.model.get_output_embeddings().weight.shape[0])
        return grammar.json_constraint(
            self.tokenizer, output.json_schema, batch_size, vocab_size, max_new_tokens=budget
        )

    def _stop_checker(self, stop: tuple[str, ...]) -> Callable[[int, list[int]], bool]:
        window = max(len(s) for s in stop) + 4

        def should_stop(row: int, tokens: list[int]) -> bool:
            tail = self._decode_tokens(tokens[-window:])
            return any(s in tail for s in stop)

        return should_stop

    def _decode_tokens(self, tokens: list[int]) -> str:
        text: str = self.tokenizer.decode(tokens, skip_special_tokens=True)
        return text


def _unstable_token_ids(tokenizer: Any) -> frozenset[int]:
    """Ids whose text can still change with the next token: byte-fallback pieces (``<0xE4>``),
    decoded as a group, and special tokens, which are skipped inside such a group."""
    ids = {i for tok, i in tokenizer.get_vocab().items() if len(tok) == 6 and tok.startswith("<0x")}
    return frozenset(ids | set(tokenizer.all_special_ids))


def _cut_at_stop(text: str, stop: tuple[str, ...]) -> str:
    cut = min((i for s in stop if (i := text.find(s)) >= 0), default=len(text))
    return text[:cut]


def _stream_text(
    steps: queue.Queue[int | BaseException | None],
    decode_tokens: Callable[[list[int]], str],
    stop: tuple[str, ...],
    eos_ids: set[int],
    unstable_ids: frozenset[int],
) -> Iterator[str]:
    """Turn a queue of tokens into text deltas that join to the full text.

    Text is held back while it may still change: trailing byte-fallback pieces, an
    incomplete multi-byte character, or a possible start of a stop sequence.
    """
    tokens: list[int] = []
    sent = 0
    hold = max((len(s) for s in stop), default=1) - 1
    while True:
        item = steps.get()
        if isinstance(item, BaseException):
            raise item
        if item is None:
            break
        if item in eos_ids:
            continue
        tokens.append(item)
        stable = len(tokens)
        while stable and tokens[stable - 1] in unstable_ids:
            stable -= 1
        text = _cut_at_stop(decode_tokens(tokens[:stable]), stop)
        safe = len(text) - hold
        if text.endswith("\ufffd"):  # an incomplete multi-byte character: wait for its next token
            continue
        if safe > sent:
            yield text[sent:safe]
            sent = safe
    text = _cut_at_stop(decode_tokens(tokens), stop)
    if len(text) > sent:
        yield text[sent:]
