"""``BasicModelRunner`` and ``LLMEngine``: the 2023 Lamini entry points, on any backend.

Both pick their backend like :func:`llmrun.load` (argument, ``LLMRUN_BACKEND``,
config file, default ``local``) and hand every call to it, so notebooks written
for Lamini's ``llama`` package run with one import changed.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from llmrun.config import accepted_options, read_config_file, resolve_backend_and_model
from llmrun.errors import InvalidInputError
from llmrun.registry import get_backend, load
from llmrun.runner import Completion, CompletionRequest, ModelRunner

if TYPE_CHECKING:
    from llmrun.training import EvalResult, TrainingExample, TrainOptions, TrainResult


class BasicModelRunner(ModelRunner):
    """Run ``model_name`` on the configured backend, as Lamini's 2023 runner did.

    ``config`` is the 2023 settings dict (``{"production.key": ...,
    "production.url": ...}``); backends that need no key ignore it. Other
    keyword options go to the backend, as with :func:`llmrun.load`.
    """

    def __init__(
        self,
        model_name: str | None = None,
        *,
        backend: str | None = None,
        config: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> None:
        if config is not None:
            if not isinstance(config, Mapping):
                raise InvalidInputError(
                    f"config must be a dict such as {{'production.key': '...'}}, got {type(config).__name__}"
                )
            backend_name, _ = resolve_backend_and_model(backend, model_name, read_config_file())
            if "config" in accepted_options(get_backend(backend_name)):
                options["config"] = dict(config)
        self.backend = load(model_name, backend, **options)
        super().__init__(
            self.backend.model_name, generation=self.backend.generation, template=self.backend.template
        )
        self.backend_name = self.backend.backend_name  # type: ignore[misc]
        self.capabilities = self.backend.capabilities  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.backend!r})"

    def complete(self, request: CompletionRequest) -> list[Completion]:
        return self.backend.complete(request)

    async def acomplete(self, request: CompletionRequest) -> list[Completion]:
        return await self.backend.acomplete(request)

    def stream_completion(self, request: CompletionRequest) -> Iterator[str]:
        return self.backend.stream_completion(request)

    def train_examples(self, examples: list[TrainingExample], options: TrainOptions) -> TrainResult:
        result = self.backend.train_examples(examples, options)
        self.model_name = self.backend.model_name
        return result

    def evaluate_examples(self, examples: list[TrainingExample]) -> EvalResult:
        return self.backend.evaluate_examples(examples)


class LLMEngine(BasicModelRunner):
    """The 2023 ``LLMEngine(id=..., ...)``: call it as ``llm(input, output_type=Answer)``."""

    def __init__(
        self,
        id: str = "llmrun",
        model_name: str | None = None,
        *,
        backend: str | None = None,
        config: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> None:
        if not isinstance(id, str) or not id:
            raise InvalidInputError(f"id must be a non-empty string naming this engine, got {id!r}")
        self.id = id
        super().__init__(model_name, backend=backend, config=config, **options)

    def __repr__(self) -> str:
        return f"LLMEngine(id={self.id!r}, runner={self.backend!r})"
