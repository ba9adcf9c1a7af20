"""The backend contract (:class:`ModelRunner`) and the plumbing every backend shares.

A backend implements one verb, :meth:`ModelRunner.complete`: given rendered
prompts, a validated :class:`~llmrun.generation.GenerationConfig` and an
optional output type, return one text per prompt (JSON text for typed calls).
Everything else — prompt rendering, argument checks, single vs batch, typed
validation, async, fine-tuning data — lives here, once.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, overload

from llmrun.errors import InvalidInputError, UnsupportedFeatureError
from llmrun.generation import GenerationConfig
from llmrun.schema import (
    Type,
    check_output_type,
    check_prompt_text,
    check_template,
    parse_output,
    render_prompt,
)

if TYPE_CHECKING:
    from pathlib import Path

    from llmrun.training import EvalResult, TrainingExample, TrainOptions, TrainResult

T = TypeVar("T", bound=Type)
Prompt = str | Type


@dataclass(frozen=True)
class CompletionRequest:
    """What a backend is asked to do: one completion per prompt.

    ``prompts`` are rendered, non-empty strings. When ``output_type`` is set
    the backend must return, for each prompt, JSON text for one instance of it.
    """

    prompts: tuple[str, ...]
    config: GenerationConfig
    output_type: type[Type] | None = None

    @property
    def max_new_tokens(self) -> int:
        """The token budget of this request."""
        return self.config.budget(typed=self.output_type is not None)


class ModelRunner(ABC):
    """A model behind llmrun's interface. Subclass it to add a backend.

    Call it with a prompt or a list of prompts (``str`` or :class:`Type`
    instances); pass ``output_type`` for typed results.
    """

    #: The registry name of the backend.
    backend_name: ClassVar[str] = "custom"

    def __init__(
        self,
        model_name: str,
        *,
        generation: GenerationConfig | None = None,
        template: str | None = None,
    ) -> None:
        if not isinstance(model_name, str) or not model_name.strip():
            raise InvalidInputError(
                f"model_name must be a non-empty string such as 'EleutherAI/pythia-70m', got {model_name!r}"
            )
        if generation is not None and not isinstance(generation, GenerationConfig):
            raise InvalidInputError(
                f"generation must be a llmrun.GenerationConfig, got {type(generation).__name__}"
            )
        self.model_name = model_name
        self.generation = generation or GenerationConfig()
        self.template = check_template(template)
        self._examples: list[TrainingExample] = []

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model_name={self.model_name!r}, backend={self.backend_name!r})"

    # ----------------------------------------------------------------- the contract
    @abstractmethod
    def complete(self, request: CompletionRequest) -> list[str]:
        """Return one completion per prompt of ``request``, in order."""

    async def acomplete(self, request: CompletionRequest) -> list[str]:
        """Async :meth:`complete`. The default runs it in a worker thread."""
        return await asyncio.to_thread(self.complete, request)

    def stream_completion(
        self, prompt: str, config: GenerationConfig, output_type: type[Type] | None = None
    ) -> Iterator[str]:
        """Yield text pieces of one completion. Optional for backends."""
        raise UnsupportedFeatureError(f"{type(self).__name__} (backend {self.backend_name!r}) cannot stream")

    def train_examples(self, examples: list[TrainingExample], options: TrainOptions) -> TrainResult:
        """Fine-tune on ``examples``; afterwards the runner answers with the tuned model. Optional."""
        raise UnsupportedFeatureError(
            f"{type(self).__name__} (backend {self.backend_name!r}) cannot fine-tune"
        )

    def evaluate_examples(self, examples: list[TrainingExample]) -> EvalResult:
        """Evaluate the (tuned) model on held-out ``examples``. Optional."""
        raise UnsupportedFeatureError(
            f"{type(self).__name__} (backend {self.backend_name!r}) cannot evaluate"
        )

    # ----------------------------------------------------------------- generation
    @overload
    def generate(self, prompt: Prompt, output_type: None = None, **options: Any) -> str: ...
    @overload
    def generate(self, prompt: Sequence[Prompt], output_type: None = None, **options: Any) -> list[str]: ...
    @overload
    def generate(self, prompt: Prompt, output_type: type[T], **options: Any) -> T: ...
    @overload
    def generate(self, prompt: Sequence[Prompt], output_type: type[T], **options: Any) -> list[T]: ...

    def generate(
        self, prompt: Prompt | Sequence[Prompt], output_type: type[T] | None = None, **options: Any
    ) -> str | list[str] | T | list[T]:
        """Generate for one prompt or a list of prompts (order kept).

        ``options`` override the runner's :class:`GenerationConfig` for this call
        (``max_new_tokens``, ``temperature``, ``top_p``, ``top_k``,
        ``repetition_penalty``, ``stop``, ``seed``) and may set ``template``.
        """
        request, single = self._prepare(prompt, output_type, options)
        result: str | list[str] | T | list[T] = self._finish(self.complete(request), request, single)
        return result

    __call__ = generate

    @overload
    async def agenerate(self, prompt: Prompt, output_type: None = None, **options: Any) -> str: ...
    @overload
    async def agenerate(
        self, prompt: Sequence[Prompt], output_type: None = None, **options: Any
    ) -> list[str]: ...
    @overload
    async def agenerate(self, prompt: Prompt, output_type: type[T], **options: Any) -> T: ...
    @overload
    async def agenerate(self, prompt: Sequence[Prompt], output_type: type[T], **options: Any) -> list[T]: ...

    async def agenerate(
        self, prompt: Prompt | Sequence[Prompt], output_type: type[T] | None = None, **options: Any
    ) -> str | list[str] | T | list[T]:
        """Async :meth:`generate`; does not block the event loop."""
        request, single = self._prepare(prompt, output_type, options)
        result: str | list[str] | T | list[T] = self._finish(await self.acomplete(request), request, single)
        return result

    def stream(self, prompt: Prompt, output_type: type[Type] | None = None, **options: Any) -> Iterator[str]:
        """Yield text pieces of one completion; joined they equal the full text."""
        request, single = self._prepare(prompt, output_type, options)
        if not single:
            raise InvalidInputError("stream() takes one prompt, not a list; call it once per prompt")
        return self.stream_completion(request.prompts[0], request.config, request.output_type)

    def _prepare(
        self, prompt: Prompt | Sequence[Prompt], output_type: type[Type] | None, options: dict[str, Any]
    ) -> tuple[CompletionRequest, bool]:
        """Check and merge everything once: settings, output type, prompts."""
        template = check_template(options.pop("template")) if "template" in options else self.template
        config = self.generation.merged(**options)
        if output_type is not None:
            output_type = check_output_type(output_type)
        single = isinstance(prompt, str | Type)
        items: Sequence[Any] = [prompt] if single else _as_prompt_list(prompt)
        prompts = tuple(_render_one(i, item, output_type, template) for i, item in enumerate(items))
        return CompletionRequest(prompts=prompts, config=config, output_type=output_type), single

    @staticmethod
    def _finish(texts: list[str], request: CompletionRequest, single: bool) -> Any:
        if len(texts) != len(request.prompts):
            raise InvalidInputError(
                f"backend returned {len(texts)} completions for {len(request.prompts)} prompts"
            )
        results: list[Any] = texts
        if request.output_type is not None:
            output_type = request.output_type
            results = [parse_output(text, output_type) for text in texts]
        return results[0] if single else results

    # ----------------------------------------------------------------- fine-tuning
    def load_data(self, data: Any, input_key: str = "input", output_key: str = "output") -> None:
        """Add training examples from a list of dicts or of (input Type, output Type) pairs."""
        from llmrun import data as data_module

        self._examples += data_module.load_examples(
            data, input_key=input_key, output_key=output_key, template=self.template
        )

    def load_data_from_jsonlines(
        self, path: str | Path, input_key: str = "input", output_key: str = "output"
    ) -> None:
        """Add training examples from a JSON-lines file, one object per line."""
        from llmrun import data as data_module

        self._examples += data_module.load_jsonlines(
            path, input_key=input_key, output_key=output_key, template=self.template
        )

    def load_data_from_csv(
        self, path: str | Path, input_key: str = "input", output_key: str = "output"
    ) -> None:
        """Add training examples from a CSV file with a header row."""
        from llmrun import data as data_module

        self._examples += data_module.load_csv(
            path, input_key=input_key, output_key=output_key, template=self.template
        )

    def load_data_from_dataframe(self, df: Any, input_key: str = "input", output_key: str = "output") -> None:
        """Add training examples from a pandas DataFrame."""
        from llmrun import data as data_module

        self._examples += data_module.load_dataframe(
            df, input_key=input_key, output_key=output_key, template=self.template
        )

    def clear_data(self) -> None:
        """Forget the loaded training examples."""
        self._examples = []

    def train(self, **options: Any) -> TrainResult:
        """Fine-tune on the loaded data; afterwards calls use the tuned model."""
        from llmrun.training import TrainOptions

        if not self._examples:
            raise InvalidInputError(
                "no training data loaded; call load_data(...), load_data_from_jsonlines(...), "
                "load_data_from_csv(...) or load_data_from_dataframe(...) first"
            )
        return self.train_examples(list(self._examples), TrainOptions.from_kwargs(**options))

    def evaluate(self) -> EvalResult:
        """Evaluate the model on the held-out part of the loaded data."""
        return self.evaluate_examples(list(self._examples))


def _as_prompt_list(prompt: object) -> Sequence[Any]:
    if not isinstance(prompt, list | tuple):
        raise InvalidInputError(
            f"prompt must be a str, a llmrun.Type instance, or a list of those; got {type(prompt).__name__}"
        )
    if not prompt:
        raise InvalidInputError("the prompt list is empty; pass at least one prompt")
    return prompt


def _render_one(index: int, item: object, output_type: type[Type] | None, template: str) -> str:
    if not isinstance(item, str | Type):
        raise InvalidInputError(
            f"prompt {index} is a {type(item).__name__}; prompts must be str or llmrun.Type instances"
        )
    if isinstance(item, str) and not item.strip():
        raise InvalidInputError(f"prompt {index} is empty; give the model some text to continue")
    if isinstance(item, str) and output_type is None:
        return check_prompt_text(index, item)
    return check_prompt_text(index, render_prompt(item, output_type, template))
