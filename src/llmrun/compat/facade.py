"""The base of the 2023 facades: a runner that hands every call to a backend runner.

A :class:`Facade` picks its backend like :func:`llmrun.load` (argument,
``LLMRUN_BACKEND``, config file, default ``local``), holds the runner it built
and translates the call keywords Lamini's 2023 ``llama`` package accepted into
llmrun's (see :func:`translate_options`). It is a :class:`~llmrun.ModelRunner`
itself, so ``generate``, ``stream``, ``agenerate`` and ``run`` work on it too.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, overload

from llmrun.config import accepted_options, read_config_file, resolve_backend_and_model
from llmrun.errors import InvalidInputError, UnsupportedFeatureError
from llmrun.registry import get_backend, load
from llmrun.runner import Completion, CompletionRequest, ModelRunner, Prompt
from llmrun.schema import Type

if TYPE_CHECKING:
    from llmrun.training import EvalResult, TrainingExample, TrainOptions, TrainResult

T = TypeVar("T", bound=Type)

#: Temperature used for ``random=True`` when the call gives none (2023: "sample, don't decode greedily").
RANDOM_TEMPERATURE = 0.7
#: Credentials 2023 code passed to every engine; dropped for backends that take none (as ``config``).
CREDENTIAL_OPTIONS = ("api_key", "api_url")
#: 2023 methods llmrun does not have, and what to use instead.
UNSUPPORTED_2023: dict[str, str] = {
    "function": "2023's program graph (@llm.function) is gone; call the engine in a plain Python function",
    "add_model": "2023's program graph is gone; call the engine directly: llm(input, output_type=...)",
    "run_all": "2023's program graph is gone; pass a list of inputs: llm([a, b], output_type=...)",
    "train_async": "train() waits for the run; run it in a thread to do other work meanwhile",
    "upload_data": "load the pairs with load_data(...) (there is no separate upload step)",
    "get_jobs": "check_job_status(job_id) for one job; train() returns the training run's result",
    "cancel_all_jobs": "cancel_job(job_id) for each inference job; a training run stops with Ctrl-C",
    "parallel": "2023's program graph is gone; pass a list of inputs: llm([a, b], output_type=...)",
    "submit_job": "use submit_inference_job(input, output_type); its rlhf=, generate_finetuning_data= and "
    "replace_with_finetune_model= were features of Lamini's 2023 service with no equivalent",
}
#: 2023 model names of OpenAI models that Lamini's service routed to OpenAI, and OpenAI's name for each.
OPENAI_MODELS_2023: dict[str, str] = {
    "chat-gpt": "gpt-3.5-turbo",
    "chat/gpt-3.5-turbo": "gpt-3.5-turbo",
    "chat/gpt-4": "gpt-4",
    "text-davinci-003": "text-davinci-003",
}
#: 2023 call keywords that are accepted and change nothing (see docs/guide/compat.md).
NO_EFFECT_KEYWORDS = ("enable_peft", "streaming")


class Unsupported2023Error(UnsupportedFeatureError, AttributeError):
    """A 2023 method llmrun does not have (an AttributeError too, so ``hasattr`` stays False)."""


class Facade(ModelRunner):
    """Run ``model_name`` on the configured backend, with 2023's call conventions.

    ``config`` is the 2023 settings dict (``{"production.key": ...}`` or
    ``{"production": {"key": ..., "url": ...}}``); backends that need no key
    ignore it, and ``api_key``/``api_url``. Other keyword options go to the
    backend, as with :func:`llmrun.load`.
    """

    def __init__(
        self,
        model_name: str | None = None,
        *,
        backend: str | None = None,
        config: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> None:
        backend_name, _ = resolve_backend_and_model(backend, model_name, read_config_file())
        _check_service_model(model_name, backend_name)
        if config is None:
            from llmrun.compat.setup import current_config

            config = current_config()
        if config is not None:
            if not isinstance(config, Mapping):
                raise InvalidInputError(
                    f"config must be a dict such as {{'production.key': '...'}}, got {type(config).__name__}"
                )
            if config and "config" in accepted_options(get_backend(backend_name)):
                options["config"] = dict(config)
        accepted = accepted_options(get_backend(backend_name))
        for name in CREDENTIAL_OPTIONS:  # 2023 passed a key everywhere; a backend without one ignores it
            if options.get(name) is None or name not in accepted:
                options.pop(name, None)
        #: The 2023 settings dict, as 2023's runners kept it (read at construction: changing it later
        #: changes nothing; build a new runner with the new settings).
        self.config: dict[str, Any] = dict(config or {})
        self.backend = load(model_name, backend_name, **options)
        super().__init__(
            self.backend.model_name, generation=self.backend.generation, template=self.backend.template
        )
        self.backend_name = self.backend.backend_name  # type: ignore[misc]
        self.capabilities = self.backend.capabilities  # type: ignore[misc]
        #: The model this facade started from (the base model of any tuning).
        self.base_model_name = self.backend.model_name
        self._load_options = {k: v for k, v in options.items() if k not in ("generation",)}
        self._others: dict[str, ModelRunner] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.backend!r})"

    def __getattr__(self, name: str) -> Any:
        """Backend settings and state (``runner.tuning_job``, ``runner.device`` ...) read through."""
        backend = self.__dict__.get("backend")
        if name.startswith("_") or backend is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        if name in UNSUPPORTED_2023:
            raise Unsupported2023Error(
                f"{type(self).__name__}.{name} (2023) is not available on the {backend.backend_name!r} "
                f"backend or any other: {UNSUPPORTED_2023[name]}"
            )
        try:
            return getattr(backend, name)
        except AttributeError:
            raise AttributeError(
                f"{type(self).__name__!r} object (backend {backend.backend_name!r}) has no attribute {name!r}"
            ) from None

    # ----------------------------------------------------------------- the contract, delegated
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

    def wait_for_job(self, job_id: str | int, **options: Any) -> TrainResult:
        """Wait again for a tuning job the backend started (Lamini); then calls use the tuned model."""
        waiter = getattr(self.backend, "wait_for_job", None)
        if waiter is None:
            raise UnsupportedFeatureError(
                f"wait_for_job is for backends that tune as remote jobs (lamini); backend "
                f"{self.backend.backend_name!r} trains in this process, so train() returns when it is done"
            )
        result: TrainResult = waiter(job_id, **options)
        self.model_name = self.backend.model_name
        return result

    # ----------------------------------------------------------------- 2023 calls
    def runner_for(self, model_name: str | None) -> ModelRunner:
        """The runner for ``model_name``: this backend, or one loaded (once) on the same backend."""
        if model_name is None or model_name == self.model_name:
            return self.backend
        _check_service_model(model_name, self.backend_name)
        if not isinstance(model_name, str) or not model_name.strip():
            raise InvalidInputError(f"model_name must be a non-empty string, got {model_name!r}")
        if model_name not in self._others:
            self._others[model_name] = load(model_name, self.backend_name, **self._load_options)
        return self._others[model_name]

    @overload
    def generate(self, prompt: Prompt, output_type: None = None, **options: Any) -> str: ...
    @overload
    def generate(self, prompt: Sequence[Prompt], output_type: None = None, **options: Any) -> list[str]: ...
    @overload
    def generate(self, prompt: Prompt, output_type: type[T], **options: Any) -> T: ...
    @overload
    def generate(self, prompt: Sequence[Prompt], output_type: type[T], **options: Any) -> list[T]: ...

    def generate(self, prompt: Any, output_type: Any = None, **options: Any) -> Any:
        """llmrun's ``generate``, also taking the 2023 keywords (see :func:`translate_options`)."""
        score = options.pop("score", None)
        if score is not None:
            _check_score(score, output_type)
        value_stops = None
        if output_type is not None and options.get("stop_tokens") is not None:
            # 2023 stopped each generated value at a stop token, not the JSON around it
            value_stops = _check_stops(options.pop("stop_tokens"))
        model_name, options = translate_options(self, prompt, options)
        runner = self.runner_for(model_name)
        if runner is self.backend:
            out = super().generate(prompt, output_type, **options)
        else:
            options.setdefault("template", self.template)
            out = runner.generate(prompt, output_type, **options)
        if value_stops:
            for value in out if isinstance(out, list) else [out]:
                _cut_at_stops(value, value_stops)
        return out

    def __call__(
        self,
        prompt: Any = None,
        output_type: Any = None,
        *,
        input: Any = None,
        inputs: Any = None,
        **options: Any,
    ) -> Any:
        """``llm(prompt, output_type=...)``, ``llm(input=..., output_type=...)`` or ``model(inputs=...)``."""
        return self.generate(pick_input(prompt, input, inputs), output_type, **options)


def _check_service_model(model_name: str | None, backend_name: str) -> None:
    """2023 model names that were OpenAI's models served through Lamini cannot run locally."""
    if backend_name != "local" or not isinstance(model_name, str):
        return
    name = model_name.strip()
    if name in OPENAI_MODELS_2023 or name.startswith("chat/"):
        openai_name = OPENAI_MODELS_2023.get(name, name.removeprefix("chat/"))
        raise UnsupportedFeatureError(
            f"model_name={model_name!r} was an OpenAI model served through Lamini's 2023 service; the "
            f"'local' backend runs Hugging Face checkpoints only. Use backend='openai' with "
            f"model_name={openai_name!r}, or a Hugging Face model id such as 'meta-llama/Llama-2-7b-chat-hf'"
        )


def _check_score(score: Any, output_type: Any) -> None:
    """2023's ``score="field"``: the output field where the model writes its score for the output.

    The field is generated like the others, so there is nothing more to do than check it is one.
    """
    fields = (
        output_type.model_fields if isinstance(output_type, type) and issubclass(output_type, Type) else {}
    )
    info = fields.get(score) if isinstance(score, str) else None
    if info is None or info.annotation not in (float, int):
        name = getattr(output_type, "__name__", repr(output_type))
        raise InvalidInputError(
            f"score={score!r} must name a number field of the output type {name} (2023's score= is the "
            f'field the model writes its score in), e.g. score: float = Context("score for the output")'
        )


def _check_stops(stops: Any) -> list[str]:
    items = [stops] if isinstance(stops, str) else stops
    if not isinstance(items, list | tuple) or not all(isinstance(x, str) and x for x in items):
        raise InvalidInputError(f"stop_tokens must be a string or a list of non-empty strings, got {stops!r}")
    return list(items)


def _cut_at_stops(value: Type, stops: list[str]) -> None:
    """Cut each string field of ``value`` (nested Types too) at its first stop token, as 2023 did."""
    for name in type(value).model_fields:
        field = getattr(value, name)
        if isinstance(field, str):
            cuts = [i for i in (field.find(s) for s in stops) if i >= 0]
            if cuts:
                setattr(value, name, field[: min(cuts)])
        elif isinstance(field, Type):
            _cut_at_stops(field, stops)


def pick_input(prompt: Any, input: Any, inputs: Any) -> Any:
    """The one input given positionally, as ``input=`` or as ``inputs=`` (2023 used all three)."""
    given = [v for v in (prompt, input, inputs) if v is not None]
    if len(given) != 1:
        raise InvalidInputError(
            f"pass exactly one input: positionally, as input=..., or as inputs=... (got {len(given)})"
        )
    return given[0]


def translate_options(
    runner: ModelRunner, prompt: Any, options: dict[str, Any]
) -> tuple[str | None, dict[str, Any]]:
    """Turn 2023 call keywords into llmrun's: returns ``(model_name, options)``.

    ``max_tokens`` is ``max_new_tokens``; ``stop_tokens`` is ``stop`` (with an
    output type, :meth:`Facade.generate` cuts each string value at them instead);
    ``random=True`` samples at :data:`RANDOM_TEMPERATURE` unless a temperature
    is given (a backend without sampling raises); ``input_type`` is checked
    against the input; ``enable_peft`` and ``streaming`` are accepted and change
    nothing (a tuned adapter is always used; the result always comes whole).
    """
    options = dict(options)
    model_name = options.pop("model_name", None)
    if "max_tokens" in options:
        if options.get("max_new_tokens") is not None:
            raise InvalidInputError("pass max_tokens (the 2023 name) or max_new_tokens, not both")
        options["max_new_tokens"] = options.pop("max_tokens")
    if "stop_tokens" in options:
        if options.get("stop") is not None:
            raise InvalidInputError("pass stop_tokens (the 2023 name) or stop, not both")
        options["stop"] = options.pop("stop_tokens")
    for name in NO_EFFECT_KEYWORDS:
        if name in options:
            _check_bool(name, options.pop(name), allow_none=True)
    random = options.pop("random", None)
    if _check_bool("random", random, allow_none=True):
        if not samples(runner):
            raise UnsupportedFeatureError(
                f"random=True cannot be honoured by the {runner.backend_name!r} backend: it decodes "
                "greedily (it takes no temperature). Drop random=True, or use backend='local' to sample"
            )
        options.setdefault("temperature", RANDOM_TEMPERATURE)
    input_type = options.pop("input_type", None)
    if input_type is not None:
        _check_input_type(input_type, prompt)
    return model_name, options


def samples(runner: ModelRunner) -> bool:
    """Whether ``runner``'s backend honours a temperature (its capabilities say so)."""
    return "temperature" in runner.capabilities.sampling


def _check_bool(name: str, value: Any, allow_none: bool = False) -> bool:
    if value is None and allow_none:
        return False
    if not isinstance(value, bool):
        raise InvalidInputError(f"{name}={value!r} is invalid: it must be True or False")
    return value


def _check_input_type(input_type: Any, prompt: Any) -> None:
    if not (isinstance(input_type, type) and issubclass(input_type, Type)):
        raise InvalidInputError(f"input_type must be a llmrun.Type subclass, got {input_type!r}")
    items: Sequence[Any] = prompt if isinstance(prompt, list | tuple) else [prompt]
    for i, item in enumerate(items):
        if not isinstance(item, input_type):
            raise InvalidInputError(
                f"input {i} is a {type(item).__name__}, not the input_type {input_type.__name__} given"
            )
