"""The 2023 training-data buffer and tuning calls, on top of :class:`~llmrun.compat.facade.Facade`.

``llmrun.load(...)`` runners tune from a list of examples
(``train_examples``/``evaluate_examples``); the 2023 facades keep the data
buffer that Lamini's ``llama`` package had: ``load_data*``, ``save_data`` /
``add_data`` / ``set_data``, ``clear_data``, ``train()``, ``evaluate()``, the
``evaluation`` attribute and ``get_eval_results()``.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from llmrun import data as data_module
from llmrun.compat.facade import Facade
from llmrun.errors import ConfigurationError, InvalidInputError, UnsupportedFeatureError
from llmrun.schema import Type
from llmrun.training import EvalResult, EvalSample, TrainingExample, TrainOptions, TrainResult

#: 2023 ``finetune_args`` keys (Hugging Face trainer names) and llmrun's name for each.
FINETUNE_ARG_ALIASES: Mapping[str, str] = {
    "num_train_epochs": "epochs",
    "per_device_train_batch_size": "batch_size",
    "gradient_accumulation_steps": "gradient_accumulation_steps",
    "max_length": "max_length",
    "learning_rate": "learning_rate",
    "max_steps": "max_steps",
    "weight_decay": "weight_decay",
    "warmup_ratio": "warmup_ratio",
    "seed": "seed",
}


class TunableFacade(Facade):
    """A :class:`Facade` with 2023's training-data buffer and tuning calls."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._examples: list[TrainingExample] = []
        #: Unpaired ``save_data`` values: kept, never trained on (they were context for Lamini's service).
        self.context_data: list[Type] = []
        #: The last ``evaluate()`` result (2023's ``llm.evaluation``).
        self.evaluation: EvalResult | None = None
        #: The last training run's job id (the run directory for a local run).
        self.job_id: str | None = None
        #: The last training run's result.
        self.train_result: TrainResult | None = None

    @property
    def examples(self) -> list[TrainingExample]:
        """The training examples loaded so far (a copy)."""
        return list(self._examples)

    # ----------------------------------------------------------------- loading
    def load_data(
        self, data: Any, verbose: bool = False, input_key: str = "input", output_key: str = "output"
    ) -> None:
        """Add examples from a list of dicts, or of ``[input Type, output Type]`` pairs."""
        rows = self._as_prompts(data)
        self._add(data_module.load_examples(rows, input_key, output_key, template=self.template), verbose)

    def load_data_from_jsonlines(
        self,
        file_path: str | Path,
        verbose: bool = False,
        input_key: str = "input",
        output_key: str = "output",
    ) -> None:
        """Add examples from a JSON-lines file, one object per line."""
        self._add(
            data_module.load_jsonlines(file_path, input_key, output_key, template=self.template), verbose
        )

    def load_data_from_csv(
        self,
        file_path: str | Path,
        verbose: bool = False,
        input_key: str = "input",
        output_key: str = "output",
    ) -> None:
        """Add examples from a CSV file with a header row."""
        self._add(data_module.load_csv(file_path, input_key, output_key, template=self.template), verbose)

    def load_data_from_dataframe(
        self, df: Any, verbose: bool = False, input_key: str = "input", output_key: str = "output"
    ) -> None:
        """Add examples from a pandas DataFrame."""
        self._add(data_module.load_dataframe(df, input_key, output_key, template=self.template), verbose)

    def save_data(self, data: Any) -> None:
        """2023's ``save_data``: a Type, a list of Types, and/or ``[input, output]`` pairs.

        Pairs become training examples. Single values were context for Lamini's
        hosted service; llmrun keeps them in :attr:`context_data` and warns that
        it does not train on them.
        """
        items = data if isinstance(data, list) else [data]
        pairs = [d for d in items if isinstance(d, list | tuple) and len(d) == 2]
        singles = [d for d in items if not (isinstance(d, list | tuple) and len(d) == 2)]
        flat = [d[0] if isinstance(d, list | tuple) and len(d) == 1 else d for d in singles]
        bad = [type(d).__name__ for d in flat if not isinstance(d, Type)]
        if bad:
            raise InvalidInputError(
                f"save_data takes Type values and [input, output] pairs of Types; got {', '.join(bad)}. "
                "For dicts use load_data([{'input': ..., 'output': ...}])"
            )
        if pairs:
            pairs = self._as_prompts(pairs)
            self._add(data_module.load_examples(pairs, template=self.template, source="save_data"), False)
        if flat:
            self.context_data.extend(flat)
            warnings.warn(
                f"save_data: {len(flat)} value(s) without an output are kept in context_data but not "
                "trained on; pass [input, output] pairs to train",
                stacklevel=2,
            )

    def add_data(self, data: Any) -> None:
        """The mid-2023 name of :meth:`save_data`."""
        self.save_data(data)

    def set_data(self, data: Any) -> None:
        """Replace the loaded data with ``data`` (2023's ``set_data``)."""
        self.clear_data()
        self.save_data(data)

    def clear_data(self) -> None:
        """Forget the loaded training examples and context values."""
        self._examples = []
        self.context_data = []

    def delete_data(self) -> None:
        """v1.0.3's name of :meth:`clear_data`."""
        self.clear_data()

    def _as_prompts(self, data: Any) -> Any:
        """``[input, output]`` pairs with each input as the prompt calls will send (a hook for templates)."""
        return data

    def _add(self, examples: list[TrainingExample], verbose: bool) -> None:
        if not isinstance(verbose, bool):
            raise InvalidInputError(f"verbose={verbose!r} is invalid: it must be True or False")
        self._examples += examples
        if verbose:
            if examples:
                print(f"Sample added data: {examples[0]}")
            print(f"Loaded {len(examples)} data pairs\nTotal data pairs: {len(self._examples)}")

    # ----------------------------------------------------------------- tuning
    def train(
        self,
        data: Any = None,
        *,
        verbose: bool = False,
        limit: int | None = None,
        is_public: bool | None = None,
        finetune_args: Mapping[str, Any] | None = None,
        enable_peft: bool | None = None,
        peft_args: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> TrainResult:
        """Fine-tune on the loaded data (or only on ``data``); afterwards calls use the tuned model.

        ``options`` are llmrun's :class:`~llmrun.TrainOptions`; ``finetune_args``
        takes them (or their Hugging Face names, :data:`FINETUNE_ARG_ALIASES`) as
        2023 did. ``enable_peft=True`` means LoRA and ``peft_args`` its settings
        (``r``, ``lora_alpha``, ``lora_dropout``, ``target_modules``). ``limit``
        trains on the first ``limit`` examples. ``is_public`` is Lamini's "share
        the tuned model": sent to Lamini, meaningless (and ignored) locally.
        ``verbose`` prints the outcome, as 2023 did.
        """
        for name, value in (("verbose", verbose), ("enable_peft", enable_peft)):
            if value is not None and not isinstance(value, bool):
                raise ConfigurationError(
                    f"train option {name}={value!r} is invalid: it must be True or False"
                )
        if self.backend_name == "lamini" and (enable_peft is not None or peft_args is not None):
            given = "enable_peft" if enable_peft is not None else "peft_args"
            raise UnsupportedFeatureError(
                f"train({given}=...) (2023) cannot be honoured on the 'lamini' backend: Lamini now chooses "
                "its tuning method and adapter settings itself. Drop it (BasicModelRunner(enable_peft=...) "
                "too), or fine-tune with backend='local', where enable_peft=True tunes with LoRA"
            )
        examples = self._examples_for(data, limit)
        merged = {**_finetune_options(finetune_args), **_peft_options(enable_peft, peft_args), **options}
        train_options = TrainOptions.from_kwargs(is_public=is_public, **merged)
        result = self.train_examples(examples, train_options)
        self.job_id = result["job_id"]
        self.train_result = result
        if verbose:
            print(f"Finetuning process completed, model name is: {result.model_name}")
        return result

    def _examples_for(self, data: Any, limit: int | None) -> list[TrainingExample]:
        if data is not None:
            examples = data_module.load_examples(
                self._as_prompts(data if isinstance(data, list) else [data]),
                template=self.template,
                source="train(data=...)",
            )
        else:
            examples = list(self._examples)
        if limit is not None:
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
                raise ConfigurationError(
                    f"train option limit={limit!r} is invalid: it must be an integer >= 1"
                )
            examples = examples[:limit]
        if not examples:
            raise InvalidInputError(
                "no training data loaded; call load_data(...), save_data([[input, output], ...]), "
                "load_data_from_jsonlines(...) or load_data_from_csv(...) first, or pass train(data=...)"
            )
        return examples

    def evaluate(self, job_id: str | None = None) -> EvalResult:
        """Evaluate the model on the held-out part of the loaded data; also sets :attr:`evaluation`.

        ``job_id`` (v1.0.3) may only name this facade's last training run.

        The result reads as 2023's dict too: ``out["eval_results"][i]["outputs"][0]``
        is the tuned model's answer and ``[1]`` the base model's.
        """
        if job_id is not None and job_id != self.job_id:
            raise InvalidInputError(
                f"evaluate(job_id={job_id!r}): this runner can evaluate its own last training run "
                f"({self.job_id!r}); load the tuned model by name to evaluate another"
            )
        result = self.evaluate_examples(list(self._examples))
        self.evaluation = self._with_base_outputs(result)
        return self.evaluation

    def get_eval_results(self) -> EvalResult:
        """The 2023 name of :meth:`evaluate`."""
        return self.evaluate()

    def _with_base_outputs(self, result: EvalResult) -> EvalResult:
        """Add what the base model answers to each sample, where the backend did not report it."""
        extra = {"model_name": self.model_name, "base_model": self.base_model_name, "job_id": self.job_id}
        extra.update(result.extra)
        samples = result.samples
        if "eval_results" not in extra and samples and self.model_name != self.base_model_name:
            base = self.runner_for(self.base_model_name)
            outputs = base.generate([s.prompt for s in samples], max_new_tokens=_budget(samples))
            samples = tuple(
                EvalSample(s.prompt, s.expected, s.got, out.strip())
                for s, out in zip(samples, outputs, strict=True)
            )
        return dataclasses.replace(result, samples=samples, extra=extra)


def _budget(samples: tuple[EvalSample, ...]) -> int:
    """A token budget for the base model's answers: enough for the longest expected answer."""
    return max(8, min(128, max(len(s.expected) for s in samples)))


def _finetune_options(args: Mapping[str, Any] | None) -> dict[str, Any]:
    if args is None:
        return {}
    if not isinstance(args, Mapping):
        raise ConfigurationError(f"finetune_args must be a dict, got {type(args).__name__}")
    known = {f.name for f in dataclasses.fields(TrainOptions)}
    out: dict[str, Any] = {}
    for key, value in args.items():
        name = FINETUNE_ARG_ALIASES.get(key, key)
        if name not in known:
            raise ConfigurationError(
                f"finetune_args key {key!r} has no llmrun counterpart; use one of "
                f"{', '.join(sorted(set(FINETUNE_ARG_ALIASES) | known))}"
            )
        out[name] = value
    return out


def _peft_options(enable_peft: bool | None, peft_args: Mapping[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if enable_peft is not None:
        out["method"] = "lora" if enable_peft else "full"
    if peft_args is not None:
        if not isinstance(peft_args, Mapping):
            raise ConfigurationError(f"peft_args must be a dict, got {type(peft_args).__name__}")
        names = {"r": "lora_r", "lora_alpha": "lora_alpha", "lora_dropout": "lora_dropout"}
        names["target_modules"] = "lora_target_modules"
        for key, value in peft_args.items():
            if key not in names:
                raise ConfigurationError(
                    f"peft_args key {key!r} is not supported; use {', '.join(sorted(names))}"
                )
            out[names[key]] = value
    return out
