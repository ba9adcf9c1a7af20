"""The backend contract (:class:`ModelRunner`) and the plumbing every backend shares.

A backend implements :meth:`ModelRunner.complete`: given a
:class:`CompletionRequest` (rendered prompts, a validated
:class:`~llmrun.generation.GenerationConfig` and, for typed calls, the
:class:`OutputSpec` built once), return one :class:`Completion` per prompt:
its text (JSON text for typed calls), why it stopped and its token counts.
Streaming (:meth:`ModelRunner.stream_completion`) takes the same request.
What a backend can do is data (:class:`Capabilities`). Everything else —
prompt rendering, argument checks, single vs batch, typed validation, result
objects, async — lives here, once. Fine-tuning takes a list of examples
(``train_examples``/``evaluate_examples``); the 2023 data buffer
(``load_data``, ``train()``...) lives in the facades of :mod:`llmrun.compat`.
"""

from __future__ import annotations

import asyncio
import functools
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, TypeVar, overload

from llmrun import outcomes
from llmrun.capabilities import SAMPLING_OPTIONS as SAMPLING_OPTIONS
from llmrun.capabilities import Capabilities as Capabilities
from llmrun.errors import (
    InvalidInputError,
    SchemaError,
    UnsupportedFeatureError,
)
from llmrun.generation import GenerationConfig
from llmrun.retries import acomplete_validated, complete_validated
from llmrun.schema import (
    Type,
    check_output_type,
    check_prompt_text,
    check_template,
    output_json_schema,
    parse_output,
    render_prompt,
)
from llmrun.streaming import aiterate, typed_stream

if TYPE_CHECKING:
    from llmrun.json_schema import SchemaDocument
    from llmrun.training import EvalResult, TrainingExample, TrainOptions, TrainResult

T = TypeVar("T", bound=Type)
O = TypeVar("O")  # noqa: E741 - the output of a RunResult
Prompt = str | Type

#: Why a completion ended: ``"stop"`` (an end-of-sequence token, a stop
#: sequence, or the JSON closed) or ``"length"`` (the token budget ran out).
FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class Usage:
    """Token counts of one completion; ``None`` where a backend cannot know them."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None

    @property
    def total_tokens(self) -> int | None:
        """Prompt plus completion tokens, or ``None`` when either is unknown."""
        if self.prompt_tokens is None or self.completion_tokens is None:
            return None
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Completion:
    """What a backend returns for one prompt."""

    text: str
    finish_reason: FinishReason = "stop"
    usage: Usage = field(default_factory=Usage)


@dataclass(frozen=True, eq=False)
class OutputSpec:
    """The typed part of a request, built once and carried on it.

    ``json_schema`` is the schema the output must satisfy; ``output_type`` the
    :class:`Type` for typed outputs (``None`` for a raw JSON Schema); ``name``
    names the output in prompts and errors.
    """

    json_schema: dict[str, Any]
    output_type: type[Type] | None = None
    name: str = "output"
    #: The checked schema document of a raw schema (its validator and ref resolver).
    document: SchemaDocument | None = field(default=None, compare=False, repr=False)

    @classmethod
    def for_type(cls, output_type: type[Type]) -> OutputSpec:
        """The spec of a :class:`Type` output (checked: a ``Type`` subclass)."""
        output_type = check_output_type(output_type)
        return cls(output_json_schema(output_type), output_type, output_type.__name__)

    @classmethod
    def for_schema(cls, schema: Mapping[str, Any], name: str = "output") -> OutputSpec:
        """The spec of a raw JSON Schema output; the result is the validated JSON value.

        The schema is checked up front (valid for its meta-schema, every ``$ref`` resolvable):
        :class:`~llmrun.errors.SchemaError` names the problem.
        """
        from llmrun.json_schema import check_json_schema

        if not isinstance(name, str) or not name.strip():
            raise SchemaError(f"the output's name must be a non-empty string, got {name!r}")
        document = check_json_schema(schema, name)
        if not isinstance(document.schema, dict):
            raise SchemaError(f"output_schema for {name!r} must be a JSON Schema dict, got {schema!r}")
        return cls(document.schema, None, name, document)

    def parse(self, text: str) -> Any:
        """Validate a backend's JSON text: a ``Type`` instance, or for a raw schema the JSON value.

        Raises :class:`~llmrun.errors.OutputValidationError` carrying the raw text.
        """
        if self.output_type is not None:
            return parse_output(text, self.output_type)
        from llmrun.json_schema import check_json_schema, validate_json_value

        document = self.document or check_json_schema(self.json_schema, self.name)
        return validate_json_value(document, text, self.name)


@dataclass(frozen=True)
class CompletionRequest:
    """What a backend is asked to do: one completion per prompt.

    ``prompts`` are rendered, non-empty strings. When ``output`` is set the
    backend must return, for each prompt, JSON text satisfying
    ``output.json_schema``.
    """

    prompts: tuple[str, ...]
    config: GenerationConfig
    output: OutputSpec | None = None

    @property
    def output_type(self) -> type[Type] | None:
        """The :class:`Type` of a typed request, else ``None``."""
        return self.output.output_type if self.output is not None else None

    @property
    def max_new_tokens(self) -> int:
        """The token budget of this request."""
        return self.config.budget(typed=self.output is not None)


@dataclass(frozen=True)
class RunResult(Generic[O]):
    """What :meth:`ModelRunner.run` returns per prompt: the output with its text, finish reason and usage."""

    output: O
    text: str
    finish_reason: FinishReason
    usage: Usage


class ModelRunner(ABC):
    """A model behind llmrun's interface. Subclass it to add a backend.

    Call it with a prompt or a list of prompts (``str`` or :class:`Type`
    instances); pass ``output_type`` for typed results.
    """

    #: The registry name of the backend.
    backend_name: ClassVar[str] = "custom"
    #: What this backend can do (see :class:`Capabilities`).
    capabilities: ClassVar[Capabilities] = Capabilities()

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

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model_name={self.model_name!r}, backend={self.backend_name!r})"

    # ----------------------------------------------------------------- the contract
    @abstractmethod
    def complete(self, request: CompletionRequest) -> list[Completion]:
        """Return one :class:`Completion` per prompt of ``request``, in order."""

    async def acomplete(self, request: CompletionRequest) -> list[Completion]:
        """Async :meth:`complete`. The default runs it in a worker thread."""
        return await asyncio.to_thread(self.complete, request)

    def stream_completion(self, request: CompletionRequest) -> Iterator[str]:
        """Yield text deltas of the one completion of ``request`` (one prompt); joined they are its text.

        Closing the iterator (or dropping it) stops generation and frees the model. Optional.
        """
        raise UnsupportedFeatureError(f"{self._who()} cannot stream")

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
        results = complete_validated(
            functools.partial(outcomes.settled, self.complete),
            request,
            functools.partial(outcomes.results, outputs=True),
        )
        outputs = [r.output for r in results]
        return outputs[0] if single else outputs

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
        results = await acomplete_validated(
            functools.partial(outcomes.asettled, self.acomplete),
            request,
            functools.partial(outcomes.results, outputs=True),
        )
        outputs = [r.output for r in results]
        return outputs[0] if single else outputs

    @overload
    def run(self, prompt: Prompt, output_type: None = None, **options: Any) -> RunResult[str]: ...
    @overload
    def run(
        self, prompt: Sequence[Prompt], output_type: None = None, **options: Any
    ) -> list[RunResult[str]]: ...
    @overload
    def run(self, prompt: Prompt, output_type: type[T], **options: Any) -> RunResult[T]: ...
    @overload
    def run(self, prompt: Sequence[Prompt], output_type: type[T], **options: Any) -> list[RunResult[T]]: ...

    def run(
        self, prompt: Prompt | Sequence[Prompt], output_type: type[T] | None = None, **options: Any
    ) -> RunResult[Any] | list[RunResult[Any]]:
        """Like :meth:`generate`, but each result also carries its text, finish reason and token usage."""
        request, single = self._prepare(prompt, output_type, options)
        results = complete_validated(
            functools.partial(outcomes.settled, self.complete), request, outcomes.results
        )
        return results[0] if single else results

    @overload
    async def arun(self, prompt: Prompt, output_type: None = None, **options: Any) -> RunResult[str]: ...
    @overload
    async def arun(
        self, prompt: Sequence[Prompt], output_type: None = None, **options: Any
    ) -> list[RunResult[str]]: ...
    @overload
    async def arun(self, prompt: Prompt, output_type: type[T], **options: Any) -> RunResult[T]: ...
    @overload
    async def arun(
        self, prompt: Sequence[Prompt], output_type: type[T], **options: Any
    ) -> list[RunResult[T]]: ...

    async def arun(
        self, prompt: Prompt | Sequence[Prompt], output_type: type[T] | None = None, **options: Any
    ) -> RunResult[Any] | list[RunResult[Any]]:
        """Async :meth:`run`; does not block the event loop."""
        request, single = self._prepare(prompt, output_type, options)
        results = await acomplete_validated(
            functools.partial(outcomes.asettled, self.acomplete), request, outcomes.results
        )
        return results[0] if single else results

    @overload
    def stream(self, prompt: Prompt, output_type: None = None, **options: Any) -> Iterator[str]: ...
    @overload
    def stream(self, prompt: Prompt, output_type: type[T], **options: Any) -> Iterator[T]: ...

    def stream(self, prompt: Prompt, output_type: type[T] | None = None, **options: Any) -> Iterator[Any]:
        """Yield text pieces of one completion; joined they equal the full text.

        With ``output_type``, yield partial ``output_type`` objects as their fields
        close, the last one validated and equal to :meth:`generate`'s result (see
        :mod:`llmrun.streaming`). Closing the iterator (or dropping it) stops generation.
        """
        request = self._stream_request(prompt, output_type, options)
        deltas = self.stream_completion(request)
        return deltas if request.output is None else typed_stream(deltas, request.output)

    @overload
    def astream(
        self, prompt: Prompt, output_type: None = None, **options: Any
    ) -> AsyncGenerator[str, None]: ...
    @overload
    def astream(self, prompt: Prompt, output_type: type[T], **options: Any) -> AsyncGenerator[T, None]: ...

    def astream(
        self, prompt: Prompt, output_type: type[T] | None = None, **options: Any
    ) -> AsyncGenerator[Any, None]:
        """Async :meth:`stream`: ``async for piece in runner.astream(...)``. Bad input raises here.

        Leaving the loop early: ``await pieces.aclose()`` (or ``contextlib.aclosing``) stops
        generation at once; otherwise when the generator is collected.
        """
        request = self._stream_request(prompt, output_type, options)
        deltas = self.stream_completion(request)
        return aiterate(deltas if request.output is None else typed_stream(deltas, request.output))

    def _stream_request(
        self, prompt: Prompt, output_type: type[Type] | None, options: dict[str, Any]
    ) -> CompletionRequest:
        if not self.capabilities.streams:
            raise UnsupportedFeatureError(f"{self._who()} cannot stream")
        request, single = self._prepare(prompt, output_type, options)
        if not single:
            raise InvalidInputError("stream() takes one prompt, not a list; call it once per prompt")
        return request

    def _who(self) -> str:
        return f"{type(self).__name__} (backend {self.backend_name!r})"

    def _prepare(
        self, prompt: Prompt | Sequence[Prompt], output_type: type[Type] | None, options: dict[str, Any]
    ) -> tuple[CompletionRequest, bool]:
        """Check and merge everything once: settings, output type or raw ``output_schema``, prompts."""
        schema = options.pop("output_schema", None)
        if schema is not None and output_type is not None:
            raise InvalidInputError("pass output_type=... or output_schema=..., not both")
        output = OutputSpec.for_type(output_type) if output_type is not None else None
        if schema is not None:
            output = OutputSpec.for_schema(schema)
        return self._request(prompt, output, options)

    def _request(
        self, prompt: Prompt | Sequence[Prompt], output: OutputSpec | None, options: dict[str, Any]
    ) -> tuple[CompletionRequest, bool]:
        """Build the request of a call: template and settings merged, prompts checked and rendered."""
        template = check_template(options.pop("template")) if "template" in options else self.template
        config = self.generation.merged(**options)
        output_type = output.output_type if output is not None else None
        self.capabilities.check(self._who(), config, output_type)
        single = isinstance(prompt, str | Type)
        items: Sequence[Any] = [prompt] if single else _as_prompt_list(prompt)
        prompts = tuple(_render_one(i, item, output_type, template) for i, item in enumerate(items))
        return CompletionRequest(prompts=prompts, config=config, output=output), single


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
