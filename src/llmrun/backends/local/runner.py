"""``LocalRunner``: a Hugging Face causal LM on this machine's CPU or GPU."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from llmrun.backends.local.engine import LocalEngine
from llmrun.backends.local.loading import LoadSettings, load_model_and_tokenizer
from llmrun.backends.local.runs import run_stem
from llmrun.generation import GenerationConfig
from llmrun.runner import Capabilities, Completion, CompletionRequest, ModelRunner
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
        self.runs_dir = Path(runs_dir)
        self.progress = bool(progress)
        self._train_options: TrainOptions | None = None
        self._run_stem = run_stem(model_name)  # every run of this runner is named after its base model
        self.settings = LoadSettings(device, dtype, trust_remote_code, allow_pickle, revision, cache_dir)
        LocalEngine.check_options(quantize=quantize, max_batch_size=max_batch_size)  # before the slow load
        model, tokenizer, self.device = load_model_and_tokenizer(model_name, self.settings)
        #: The engine that owns the model, tokenizer and prepared decoder; evaluation and servers use it too.
        self.engine = LocalEngine(
            model,
            tokenizer,
            quantize=quantize,
            truncate_prompt=truncate_prompt,
            max_batch_size=max_batch_size,
        )

    @property
    def model(self) -> Any:
        """The transformers model."""
        return self.engine.model

    @property
    def tokenizer(self) -> Any:
        """The model's tokenizer."""
        return self.engine.tokenizer

    @property
    def max_batch_size(self) -> int:
        """Prompts per forward pass."""
        return self.engine.max_batch_size

    @max_batch_size.setter
    def max_batch_size(self, value: int) -> None:
        LocalEngine.check_options(quantize=self.quantize, max_batch_size=value)
        self.engine.max_batch_size = value

    @property
    def quantize(self) -> str:
        """``"none"`` or ``"int8"``."""
        return self.engine.quantize

    @property
    def truncate_prompt(self) -> bool:
        """Whether prompts that do not fit lose their start instead of failing."""
        return self.engine.truncate_prompt

    @truncate_prompt.setter
    def truncate_prompt(self, value: bool) -> None:
        self.engine.truncate_prompt = bool(value)

    @property
    def context_length(self) -> int:
        """The most tokens (prompt plus new) the model can attend to."""
        return self.engine.context_length

    @property
    def eos_token_ids(self) -> frozenset[int]:
        """Token ids that end a generation."""
        return self.engine.eos_token_ids

    # ------------------------------------------------------------------ contract
    def complete(self, request: CompletionRequest) -> list[Completion]:
        return self.engine.generate(request)

    def stream_completion(self, request: CompletionRequest) -> Iterator[str]:
        return self.engine.stream(request)

    def train_examples(self, examples: list[TrainingExample], options: TrainOptions) -> TrainResult:
        """Fine-tune in place into a run directory under ``runs_dir``; then answer with the tuned model."""
        from llmrun.backends.local.training import train_local

        run_dir = self._run_dir(options)
        with self.engine.lock:
            try:
                result = train_local(self.engine, examples, options, run_dir, progress=self.progress)
            finally:
                # the optimizer's fused in-place updates can leave the weights' version counters
                # as they were, so the prepared copies are rebuilt explicitly, after success or restore
                self.engine.refresh()
        self._train_options = options
        self.model_name = result.model_name
        return result

    def evaluate_examples(self, examples: list[TrainingExample]) -> EvalResult:
        """Held-out loss, perplexity, exact match and samples, on the split training used."""
        from llmrun.backends.local.evaluation import evaluate_local

        with self.engine.lock:  # its held-out loss runs the model directly
            return evaluate_local(self.engine, examples, self._train_options)

    def _run_dir(self, options: TrainOptions) -> Path:
        """A new run directory named after the base model, or with ``resume`` its newest run."""
        from llmrun.backends.local.runs import latest_run_dir, new_run_dir

        if options.resume:
            latest = latest_run_dir(self.runs_dir, self._run_stem)
            if latest is not None:
                return latest
        return new_run_dir(self.runs_dir, self._run_stem)
