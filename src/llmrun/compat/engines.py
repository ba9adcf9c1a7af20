"""``BasicModelRunner``, ``LLMEngine`` (and mid-2023's ``LLM``) and ``Lamini``: the 2023 entry points.

Each picks its backend like :func:`llmrun.load` and hands every call to it,
so programs written for Lamini's ``llama`` package run with one import changed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar, overload

from pydantic import create_model

from llmrun.compat.facade import RANDOM_TEMPERATURE, pick_input, samples, translate_options
from llmrun.compat.jobs import InferenceJobs
from llmrun.compat.prompts import BasePrompt, check_2023_template, fill_2023_template
from llmrun.compat.tuning import TunableFacade
from llmrun.errors import InvalidInputError, UnsupportedFeatureError
from llmrun.runner import Prompt
from llmrun.schema import Context, Type

T = TypeVar("T", bound=Type)


class Text(str):
    """A text result of a batched 2023 call: a ``str`` that also reads as ``{"input": ..., "output": ...}``.

    2023's ``BasicModelRunner`` answered a list of prompts with such dicts;
    llmrun answers with strings, and these strings answer ``["output"]`` and
    ``["input"]`` too, so both kinds of code work.
    """

    input: str

    def __new__(cls, text: str, input: str) -> Text:
        self = super().__new__(cls, text)
        self.input = input
        return self

    def __getitem__(self, key: Any) -> Any:
        if key == "output":
            return str(self)
        if key == "input":
            return self.input
        return str.__getitem__(self, key)


class BasicModelRunner(TunableFacade):
    """Run (and fine-tune) ``model_name``, text in and text out, as Lamini's 2023 runner did.

    ``config`` is the 2023 settings dict; ``task_name`` and ``enable_peft``
    are 2023's (``enable_peft=True``: tune with LoRA). Other keyword options go
    to the backend, as with :func:`llmrun.load`.
    """

    def __init__(
        self,
        model_name: str | None = None,
        task_name: str | None = None,
        enable_peft: bool = False,
        config: Mapping[str, Any] | None = None,
        *,
        backend: str | None = None,
        **options: Any,
    ) -> None:
        if task_name is not None and (not isinstance(task_name, str) or not task_name):
            raise InvalidInputError(f"task_name must be a non-empty string, got {task_name!r}")
        if not isinstance(enable_peft, bool):
            raise InvalidInputError(f"enable_peft={enable_peft!r} is invalid: it must be True or False")
        super().__init__(model_name, backend=backend, config=config, **options)
        self.task_name = task_name
        self.enable_peft = enable_peft

    def __call__(
        self,
        prompt: Any = None,
        output_type: Any = None,
        *,
        input: Any = None,
        inputs: Any = None,
        **options: Any,
    ) -> Any:
        """Text for one prompt; for a list, texts that also read as ``{"input", "output"}``."""
        given = pick_input(prompt, input, inputs)
        out = self.generate(given, output_type, **options)
        if output_type is None and isinstance(given, list | tuple):
            return [Text(o, i if isinstance(i, str) else str(i)) for o, i in zip(out, given, strict=True)]
        return out

    def train(self, data: Any = None, **options: Any) -> Any:
        """As :meth:`TunableFacade.train`; ``enable_peft=True`` at construction means LoRA."""
        if self.enable_peft and "enable_peft" not in options and "method" not in options:
            options["enable_peft"] = True
        return super().train(data, **options)

    def upload_file(
        self, file_path: str | Path, input_key: str = "input", output_key: str = "output"
    ) -> None:
        """2023's ``upload_file``: load a ``.jsonl``/``.jsonlines`` or ``.csv`` file as training data."""
        suffix = Path(file_path).suffix.lower()
        if suffix in (".jsonl", ".jsonlines"):
            self.load_data_from_jsonlines(file_path, input_key=input_key, output_key=output_key)
        elif suffix == ".csv":
            self.load_data_from_csv(file_path, input_key=input_key, output_key=output_key)
        else:
            raise InvalidInputError(f"{file_path}: upload_file takes a .jsonl, .jsonlines or .csv file")


class LLMEngine(TunableFacade):
    """The 2023 ``LLMEngine(id=..., ...)``: call it as ``llm(input, output_type=Answer)``.

    ``prompt_template`` is a 2023 template with ``{input:field}`` placeholders
    filled from the input Type (given third, as v1.0.3 ordered it, it is told
    from the docs' ``config`` by its type). Besides the data and tuning calls it has 2023's
    ``improve``, ``sample`` and batch jobs (``submit_inference_job``,
    ``check_job_status``, ``get_job_results``, ``cancel_job``).
    """

    def __init__(
        self,
        id: str = "llmrun",
        model_name: str | None = None,
        config: Mapping[str, Any] | None = None,
        prompt_template: str | None = None,
        *,
        prompt: BasePrompt | None = None,
        backend: str | None = None,
        **options: Any,
    ) -> None:
        if not isinstance(id, str) or not id:
            raise InvalidInputError(f"id must be a non-empty string naming this engine, got {id!r}")
        if isinstance(config, str) and (prompt_template is None or isinstance(prompt_template, Mapping)):
            # v1.0.3: (id, model_name, prompt_template, api_key, config); the docs: (id, model_name, config)
            config, prompt_template = prompt_template, config
        if prompt is not None:  # mid-2023: LLMEngine(prompt=BlankPrompt()) or a BasePrompt subclass
            if not isinstance(prompt, BasePrompt):
                raise InvalidInputError(
                    f"prompt must be a BasePrompt instance (e.g. BlankPrompt() from llmrun.compat.prompts), "
                    f"got {type(prompt).__name__}"
                )
            if prompt_template is not None:
                raise InvalidInputError("pass prompt=... or prompt_template=..., not both")
            prompt_template = prompt.prompt_template
        self.prompt = prompt
        self.id = id
        self.prompt_template = None if prompt_template is None else check_2023_template(prompt_template)
        super().__init__(model_name, backend=backend, config=config, **options)
        self.improvements: list[tuple[str, str, list[Any], list[Any]]] = []
        self._metrics: list[Any] = []
        self._jobs = InferenceJobs(self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.id!r}, runner={self.backend!r})"

    @overload
    def generate(self, prompt: Prompt, output_type: None = None, **options: Any) -> str: ...
    @overload
    def generate(self, prompt: Sequence[Prompt], output_type: None = None, **options: Any) -> list[str]: ...
    @overload
    def generate(self, prompt: Prompt, output_type: type[T], **options: Any) -> T: ...
    @overload
    def generate(self, prompt: Sequence[Prompt], output_type: type[T], **options: Any) -> list[T]: ...

    def generate(self, prompt: Any, output_type: Any = None, **options: Any) -> Any:
        """As :meth:`Facade.generate`, with ``prompt_template`` filled and ``improve()`` feedback added."""
        if self.prompt_template is not None:
            prompt = _fill_each(self.prompt_template, prompt)
        if self.improvements and output_type is not None and "template" not in options:
            extra = _improvement_text(self.improvements, output_type)
            if extra:
                options["template"] = self.template + extra.replace("{", "{{").replace("}", "}}")
        return super().generate(prompt, output_type, **options)

    def _as_prompts(self, data: Any) -> Any:
        """With a ``prompt_template``, pairs train on the same filled prompt that calls send."""
        if self.prompt_template is None or not isinstance(data, list | tuple):
            return data
        template = self.prompt_template
        return [
            [fill_2023_template(template, d[0].model_dump()), d[1]]
            if isinstance(d, list | tuple) and len(d) == 2 and isinstance(d[0], Type)
            else d
            for d in data
        ]

    # ----------------------------------------------------------------- mid-2023: fit, metrics
    def fit(self, examples: Any) -> None:
        """Mid-2023's name of :meth:`save_data`."""
        self.save_data(examples)

    def add_metric(self, metric: Any) -> None:
        """Keep a metric (e.g. :class:`~llmrun.compat.metrics.CompareEqualMetric`) for :meth:`metrics`."""
        if not hasattr(metric, "input") or not hasattr(metric, "get_metric_type"):
            raise InvalidInputError(
                "add_metric takes a metric with .input and .get_metric_type(), e.g. CompareEqualMetric"
            )
        self._metrics.append(metric)

    def metrics(self) -> list[Any]:
        """Each added metric's value: its metric type, as the model judges its input."""
        return [self.generate(m.input, m.get_metric_type()) for m in self._metrics]

    # ----------------------------------------------------------------- improve, sample
    def improve(
        self,
        on: str,
        to: str,
        good_examples: list[Any] | None = None,
        bad_examples: list[Any] | None = None,
    ) -> None:
        """Ask for better ``on`` fields, described by ``to`` (and examples of good and bad outputs).

        Lamini's service folded this feedback into its model; llmrun adds it to
        the prompt of every typed call whose output type has the field ``on``.
        """
        for name, value in (("on", on), ("to", to)):
            if not isinstance(value, str) or not value.strip():
                raise InvalidInputError(f"improve() needs a non-empty string {name}=..., got {value!r}")
        good, bad = list(good_examples or []), list(bad_examples or [])
        self.improvements.append((on, to, good, bad))

    def sample(self, input: Any, output_type: Any = None, n: int = 1, **options: Any) -> list[Any]:
        """Up to ``n`` different outputs for one input, by sampling (temperature 0.7 unless given)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise InvalidInputError(f"n={n!r} is invalid: it must be an integer >= 1")
        if not samples(self):
            raise UnsupportedFeatureError(
                f"sample() cannot be honoured by the {self.backend_name!r} backend: it decodes greedily "
                "(it takes no temperature), so every sample would be the same. Use backend='local' to sample"
            )
        if isinstance(input, list | tuple):
            return [self.sample(item, output_type, n, **options) for item in input]
        options.setdefault("temperature", RANDOM_TEMPERATURE)
        base_seed = options.pop("seed", None) or 0
        found: list[Any] = []
        for attempt in range(4 * n):
            out = self.generate(input, output_type, seed=base_seed + attempt, **options)
            if out not in found:
                found.append(out)
            if len(found) == n:
                break
        return found

    # ----------------------------------------------------------------- batch jobs
    def submit_inference_job(
        self,
        input: Any,
        output_type: Any = None,
        *args: Any,
        **options: Any,
    ) -> dict[str, str]:
        """Start a background job over ``input`` (one or a list); returns ``{"job_id", "status"}``."""
        if args:
            raise InvalidInputError(
                "submit_inference_job takes input and output_type; pass other settings by name"
            )
        model_name, options = translate_options(self, input, options)
        if model_name not in (None, self.model_name):
            raise UnsupportedFeatureError(
                f"submit_inference_job(model_name={model_name!r}) cannot be honoured: a job runs on this "
                f"engine's model {self.model_name!r}. Build LLMEngine(model_name={model_name!r}) for it"
            )
        if self.prompt_template is not None:
            input = _fill_each(self.prompt_template, input)
        return self._jobs.submit(input, output_type, options)

    def check_job_status(self, job_id: str | None = None) -> dict[str, Any]:
        """The job's ``status`` (SCHEDULED, RUNNING, DONE, ERRORED, CANCELED) and ``progress``.

        The last training run's id (``train()["job_id"]``, the default when no
        inference job was submitted) answers with that run's status dict, as v1.0.3's did.
        """
        job_id = job_id if job_id is not None else self._jobs.last or self.job_id
        if job_id is not None and job_id == self.job_id and self.train_result is not None:
            return self.train_result.as_2023_dict()
        if job_id is None:
            raise InvalidInputError("no job yet: submit_inference_job(...) or train() first")
        return self._jobs.status(job_id)

    def get_job_results(self, job_id: str, output_type: Any = None) -> list[Any]:
        """The outputs finished so far, in input order."""
        return self._jobs.results(job_id, output_type)

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        """Stop the job; results finished before stay readable."""
        return self._jobs.cancel(job_id)


class LLM(LLMEngine):
    """Mid-2023's ``LLM(name=...)``: ``LLMEngine`` under its earlier name (``add_data`` for pairs)."""

    def __init__(self, name: str = "llmrun", model_name: str | None = None, **kwargs: Any) -> None:
        super().__init__(id=name, model_name=model_name, **kwargs)
        self.name = name


class Lamini(LLMEngine):
    """2023's untyped engine: dict inputs and a dict ``output_type`` such as ``{"answer": "str"}``.

    Each call builds Types from the dicts and runs as :class:`LLMEngine` would;
    the answer is a dict (or a list of dicts). Field kinds: ``str``/``string``,
    ``int``/``integer``, ``float``, ``bool``/``boolean``; any other value is read
    as the description of a ``str`` field, as 2023 did. A key may name its kind,
    as v1.0.3 allowed: ``{"Answer#bool": "whether ..."}`` (the answer's key is ``Answer``).
    """

    def __call__(  # type: ignore[override]
        self,
        input: Any = None,
        output_type: Any = None,
        **options: Any,
    ) -> Any:
        if not isinstance(output_type, Mapping) or not output_type:
            raise InvalidInputError('Lamini output_type must be a non-empty dict such as {"answer": "str"}')
        items = input if isinstance(input, list) else [input]
        if not items or not all(isinstance(i, Mapping) and i for i in items):
            raise InvalidInputError(
                'Lamini input must be a non-empty dict (or a list of them), e.g. {"question": "..."}'
            )
        in_type = _dict_type("Input", {k: type(v).__name__ for k, v in items[0].items()})
        out_type = _dict_type("Output", dict(output_type))
        typed = [in_type(**{k: _plain(v) for k, v in i.items()}) for i in items]
        out = self.generate(typed if isinstance(input, list) else typed[0], out_type, **options)
        return [o.model_dump() for o in out] if isinstance(out, list) else out.model_dump()

    def save_data(self, data: Any) -> None:
        """v1.0.3's dict ``save_data``: ``[input_map, output_map]`` pairs train; single maps are context."""
        items = data if isinstance(data, list) else [data]
        super().save_data([_typed_dicts(d) for d in items])


def _typed_dicts(item: Any) -> Any:
    """A dict (or a pair of dicts) as the Types a :class:`Lamini` call builds from it."""
    if isinstance(item, Mapping) and item:
        return _dict_type("Input", {k: type(v).__name__ for k, v in item.items()})(
            **{k: _plain(v) for k, v in item.items()}
        )
    if isinstance(item, list | tuple) and len(item) == 2 and all(isinstance(x, Mapping) and x for x in item):
        inp, out = item
        return [
            _typed_dicts(inp),
            _dict_type("Output", {k: type(v).__name__ for k, v in out.items()})(
                **{k: _plain(v) for k, v in out.items()}
            ),
        ]
    return item


_KINDS: dict[str, type] = {"str": str, "string": str, "int": int, "integer": int, "float": float}
_KINDS.update({"bool": bool, "boolean": bool})


def _dict_type(name: str, fields: Mapping[str, Any]) -> type[Type]:
    spec: dict[str, Any] = {}
    for key, kind in fields.items():
        field, _, typed = key.partition("#") if isinstance(key, str) else (key, "", "")
        if not isinstance(field, str) or not field.isidentifier():
            raise InvalidInputError(f"field name {key!r} must be an identifier (optionally with #type)")
        if typed:  # v1.0.3: {"Answer#bool": "description"}
            chosen = _KINDS.get(typed.lower())
            if chosen is None:
                raise InvalidInputError(
                    f"field {key!r}: unknown type {typed!r}; use one of {', '.join(sorted(_KINDS))}"
                )
            spec[field] = (chosen, Context(str(kind)))
            continue
        chosen = _KINDS.get(str(kind).lower())
        spec[field] = (chosen, Context("")) if chosen is not None else (str, Context(str(kind)))
    return create_model(name, __base__=Type, **spec)


def _plain(value: Any) -> Any:
    return value if isinstance(value, str | int | float | bool) else str(value)


def _fill_each(template: str, prompt: Any) -> Any:
    def one(item: Any) -> str:
        if not isinstance(item, Type):
            raise InvalidInputError(
                f"prompt_template fills {{input:field}} from Type inputs, got {type(item).__name__}"
            )
        return fill_2023_template(template, item.model_dump())

    return [one(i) for i in prompt] if isinstance(prompt, list | tuple) else one(prompt)


def _improvement_text(improvements: list[tuple[str, str, list[Any], list[Any]]], output_type: Any) -> str:
    fields = getattr(output_type, "model_fields", {})
    lines = []
    for on, to, good, bad in improvements:
        if on not in fields:
            continue
        lines.append(f"For {on}: {to}")
        lines += [f"  A good {on}: {_example(e, on)}" for e in good]
        lines += [f"  A bad {on}: {_example(e, on)}" for e in bad]
    return ("\n" + "\n".join(lines) + "\n") if lines else ""


def _example(example: Any, field: str) -> str:
    if isinstance(example, Type) and field in type(example).model_fields:
        return str(getattr(example, field))
    return str(example)
