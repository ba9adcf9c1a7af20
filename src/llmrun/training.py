"""Backend-neutral fine-tuning types: examples, options and results.

Every backend trains from the same :class:`TrainingExample` list with the same
:class:`TrainOptions`, and answers with the same :class:`TrainResult` and
:class:`EvalResult`. This module is light: it imports neither torch nor any SDK.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import InitVar, dataclass, field
from pathlib import Path
from typing import Any, Literal

from llmrun.checks import is_finite_number, is_int, is_int_at_least, is_number_at_least
from llmrun.errors import ConfigurationError

Method = Literal["auto", "full", "lora"]

#: Name of the metadata file written next to a tuned model and in its run directory.
RUN_METADATA_FILE = "llmrun_run.json"
#: Models with more parameters than this are tuned with LoRA when ``method="auto"``.
AUTO_LORA_MIN_PARAMS = 1_000_000_000
#: Default learning rates per method, used when ``learning_rate`` is None.
DEFAULT_LEARNING_RATES: Mapping[str, float] = {"full": 5e-5, "lora": 2e-4}


@dataclass(frozen=True)
class TrainingExample:
    """One fine-tuning pair: the model learns to continue ``prompt`` with ``completion``.

    ``separator`` is inserted between the two when a backend builds the training
    text (``prompt + separator + completion``, followed by the end-of-sequence
    token); it is ``" "`` for plain text pairs whose prompt does not already end
    in whitespace and ``""`` for typed pairs, whose completion is the JSON the
    constrained decoder produces right after the prompt.
    """

    prompt: str
    completion: str
    separator: str = ""

    @property
    def target(self) -> str:
        """The text the model must produce after the prompt (separator included)."""
        return self.separator + self.completion


@dataclass(frozen=True)
class TrainOptions:
    """Fine-tuning settings shared by every backend. Validated on construction.

    ``method``: ``"full"`` updates every weight, ``"lora"`` trains a low-rank
    adapter (peft), ``"auto"`` picks full fine-tuning for models up to
    :data:`AUTO_LORA_MIN_PARAMS` parameters and LoRA above. ``learning_rate=None``
    takes the method's default (:data:`DEFAULT_LEARNING_RATES`). ``max_steps``,
    when set, overrides ``epochs``. ``eval_fraction`` of the examples (at least
    one when it is > 0 and there are 2+ examples) is held out for evaluation,
    chosen deterministically by ``seed``. ``bf16`` turns on bfloat16 autocast.
    A checkpoint is written at the end of each epoch, or every
    ``save_every_steps`` optimizer steps when that is set, and at the end; the
    newest ``keep_checkpoints`` are kept. ``resume`` continues from the last
    checkpoint of the run directory. Backends ignore
    settings that have no meaning for them (a remote service has no run dir).

    ``is_public`` is Lamini's "share the tuned model with everyone" (sent to
    Lamini when set; a local run has nothing to share and ignores it).

    ``lora=True`` is a shorthand for ``method="lora"`` (``lora=False`` for
    ``"full"``). :meth:`from_kwargs` builds options from user keywords and
    names the known ones when a keyword is unknown.
    """

    method: Method = "auto"
    epochs: int = 3
    max_steps: int | None = None
    learning_rate: float | None = None
    batch_size: int = 8
    gradient_accumulation_steps: int = 1
    max_length: int = 512
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0
    seed: int = 42
    eval_fraction: float = 0.1
    bf16: bool = False
    gradient_checkpointing: bool = False
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_target_modules: tuple[str, ...] | None = None
    save_every_steps: int | None = None
    keep_checkpoints: int = 1
    resume: bool = False
    log_every_steps: int = 10
    eval_max_examples: int = 100
    eval_max_new_tokens: int | None = None
    num_samples: int = 3
    is_public: bool | None = None
    lora: InitVar[bool | None] = None

    def __post_init__(self, lora: bool | None) -> None:
        if lora is not None:
            if not isinstance(lora, bool):
                raise ConfigurationError(
                    f"training option lora={lora!r} is invalid: it must be True or False"
                )
            wanted = "lora" if lora else "full"
            if self.method not in ("auto", wanted):
                raise ConfigurationError(
                    f"lora={lora} contradicts method={self.method!r}; pass only one of them"
                )
            object.__setattr__(self, "method", wanted)
        targets = self.lora_target_modules
        if targets is not None and not isinstance(targets, tuple):
            if isinstance(targets, str):
                object.__setattr__(self, "lora_target_modules", (targets,))
            elif isinstance(targets, Sequence):
                object.__setattr__(self, "lora_target_modules", tuple(targets))
        _check_options(self)

    @classmethod
    def from_kwargs(cls, lora: bool | None = None, **kwargs: Any) -> TrainOptions:
        """Build options from user keywords; unknown names raise ConfigurationError.

        ``lora=True`` means ``method="lora"``; ``lora=False`` means ``method="full"``.
        """
        return cls().merged(lora=lora, **kwargs)

    def merged(self, lora: bool | None = None, **overrides: Any) -> TrainOptions:
        """Return a copy with ``overrides`` applied; ``None`` values are ignored."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ConfigurationError(
                f"unknown training option(s) {', '.join(unknown)}; "
                f"known options are: lora, {', '.join(sorted(known))}"
            )
        changes = {k: v for k, v in overrides.items() if v is not None}
        if lora is not None and "method" not in changes:
            changes["method"] = "auto"
        return dataclasses.replace(self, lora=lora, **changes)

    def resolved_method(self, num_parameters: int) -> Literal["full", "lora"]:
        """The method to use for a model of ``num_parameters`` parameters."""
        if self.method != "auto":
            return self.method
        return "lora" if num_parameters > AUTO_LORA_MIN_PARAMS else "full"

    def resolved_learning_rate(self, method: Literal["full", "lora"]) -> float:
        """``learning_rate``, or the default of ``method`` when it is None."""
        return self.learning_rate if self.learning_rate is not None else DEFAULT_LEARNING_RATES[method]

    def to_dict(self) -> dict[str, Any]:
        """The options as JSON-ready data."""
        data = dataclasses.asdict(self)
        if self.lora_target_modules is not None:
            data["lora_target_modules"] = list(self.lora_target_modules)
        return data


def _check_options(o: TrainOptions) -> None:
    def bad(name: str, value: object, rule: str) -> ConfigurationError:
        return ConfigurationError(f"training option {name}={value!r} is invalid: {rule}")

    def positive_int(name: str, value: object, *, allow_none: bool = False, minimum: int = 1) -> None:
        if value is None and allow_none:
            return
        if not is_int_at_least(value, minimum):
            extra = " or None" if allow_none else ""
            raise bad(name, value, f"it must be an integer >= {minimum}{extra}")

    def number(name: str, value: object, low: float, high: float, *, low_open: bool = False) -> None:
        if not (
            is_number_at_least(value, low, strict=low_open) and is_finite_number(value) and value <= high
        ):
            left = "(" if low_open else "["
            right = ")" if high == math.inf else "]"
            raise bad(name, value, f"it must be a finite number in {left}{low}, {high}{right}")

    if o.method not in ("auto", "full", "lora"):
        raise bad("method", o.method, "it must be 'auto', 'full' or 'lora'")
    positive_int("epochs", o.epochs)
    positive_int("max_steps", o.max_steps, allow_none=True)
    if o.learning_rate is not None:
        number("learning_rate", o.learning_rate, 0.0, 1.0, low_open=True)
    positive_int("batch_size", o.batch_size)
    positive_int("gradient_accumulation_steps", o.gradient_accumulation_steps)
    positive_int("max_length", o.max_length, minimum=2)
    number("warmup_ratio", o.warmup_ratio, 0.0, 1.0)
    number("weight_decay", o.weight_decay, 0.0, 1.0)
    if o.max_grad_norm is not None:
        number("max_grad_norm", o.max_grad_norm, 0.0, math.inf, low_open=True)
    if not is_int(o.seed):
        raise bad("seed", o.seed, "it must be an integer")
    number("eval_fraction", o.eval_fraction, 0.0, 0.5)
    for name in ("bf16", "gradient_checkpointing", "resume"):
        if not isinstance(getattr(o, name), bool):
            raise bad(name, getattr(o, name), "it must be True or False")
    if o.is_public is not None and not isinstance(o.is_public, bool):
        raise bad("is_public", o.is_public, "it must be True, False or None")
    positive_int("lora_r", o.lora_r)
    positive_int("lora_alpha", o.lora_alpha)
    number("lora_dropout", o.lora_dropout, 0.0, 1.0)
    targets = o.lora_target_modules
    if targets is not None and (
        not isinstance(targets, tuple) or not targets or not all(isinstance(t, str) and t for t in targets)
    ):
        raise bad("lora_target_modules", targets, "it must be a non-empty list of module names, or None")
    positive_int("save_every_steps", o.save_every_steps, allow_none=True)
    positive_int("keep_checkpoints", o.keep_checkpoints)
    positive_int("log_every_steps", o.log_every_steps)
    positive_int("eval_max_examples", o.eval_max_examples, minimum=0)
    positive_int("eval_max_new_tokens", o.eval_max_new_tokens, allow_none=True)
    positive_int("num_samples", o.num_samples, minimum=0)


def split_examples(
    examples: Sequence[TrainingExample], eval_fraction: float, seed: int
) -> tuple[list[TrainingExample], list[TrainingExample]]:
    """Split into (train, held-out), deterministically for a given ``seed``.

    The held-out part has ``round(len * eval_fraction)`` examples, at least one
    when ``eval_fraction > 0`` and there are two or more examples; the order of
    each part follows the input order.
    """
    n = len(examples)
    n_eval = 0 if eval_fraction <= 0 or n < 2 else min(n - 1, max(1, round(n * eval_fraction)))
    order = list(range(n))
    random.Random(seed).shuffle(order)
    held = set(order[:n_eval])
    train = [e for i, e in enumerate(examples) if i not in held]
    evals = [e for i, e in enumerate(examples) if i in held]
    return train, evals


@dataclass(frozen=True)
class EvalSample:
    """One evaluated pair: the prompt, the expected completion and the model's answer.

    ``base_output`` is the base (untuned) model's answer where it was computed
    (Lamini's eval rows carry it; the 2023 facades compute it locally).
    """

    prompt: str
    expected: str
    got: str
    base_output: str | None = None


class _DictView:
    """2023 dict access (``result["model_name"]``) over a result's :meth:`as_2023_dict`."""

    def as_2023_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def __getitem__(self, key: str) -> Any:
        view = self.as_2023_dict()
        if key not in view:
            raise KeyError(
                f"{type(self).__name__} has no key {key!r}; the keys 2023 code can read are "
                f"{', '.join(sorted(view))} (or use the attributes)"
            )
        return view[key]

    def __contains__(self, key: object) -> bool:
        return key in self.as_2023_dict()

    def get(self, key: str, default: Any = None) -> Any:
        """``result.get(key, default)``, as on the 2023 dict."""
        return self.as_2023_dict().get(key, default)

    def keys(self) -> list[str]:
        """The keys of the 2023 dict."""
        return list(self.as_2023_dict())

    def __iter__(self) -> Iterator[str]:
        return iter(self.as_2023_dict())


@dataclass(frozen=True)
class EvalResult(_DictView):
    """What ``evaluate()`` measured. Figures a backend cannot compute are None.

    ``loss`` is the mean cross-entropy per completion token on the held-out
    pairs and ``perplexity`` its exponential; ``exact_match`` is the fraction
    (0..1) of held-out pairs answered exactly under greedy decoding (compared
    after stripping whitespace; JSON completions are compared as JSON).
    ``extra`` holds backend-specific figures.

    It also reads as the 2023 eval dict: ``result["job_id"]`` and
    ``result["eval_results"][i]`` with ``"input"`` and ``"outputs"``, whose
    ``[0]`` is the tuned model's ``{"model_name", "output"}`` and ``[1]`` the base
    model's (when its answer is known).
    """

    loss: float | None
    perplexity: float | None
    exact_match: float | None
    samples: tuple[EvalSample, ...]
    num_examples: int
    extra: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-ready data."""
        return {
            "loss": self.loss,
            "perplexity": self.perplexity,
            "exact_match": self.exact_match,
            "samples": [dataclasses.asdict(s) for s in self.samples],
            "num_examples": self.num_examples,
            "extra": dict(self.extra),
        }

    def as_2023_dict(self) -> dict[str, Any]:
        """The result in the shape of Lamini's 2023 ``evaluate()`` dict (see the class docstring)."""
        rows = self.extra.get("eval_results")
        if not isinstance(rows, list):
            tuned = self.extra.get("model_name")
            base = self.extra.get("base_model")
            rows = []
            for s in self.samples:
                outputs = [{"model_name": tuned, "output": s.got}]
                if s.base_output is not None:
                    outputs.append({"model_name": base, "output": s.base_output})
                rows.append({"input": s.prompt, "expected": s.expected, "outputs": outputs})
        return {"job_id": self.extra.get("job_id"), "eval_results": rows, **self.to_dict()}

    def __str__(self) -> str:
        def fmt(v: float | None) -> str:
            return "n/a" if v is None else f"{v:.4g}"

        lines = [
            f"EvalResult on {self.num_examples} example(s): loss={fmt(self.loss)} "
            f"perplexity={fmt(self.perplexity)} exact_match={fmt(self.exact_match)}"
        ]
        for s in self.samples:
            lines.append(f"  prompt={s.prompt!r}\n    expected={s.expected!r}\n    got={s.got!r}")
        return "\n".join(lines)


TrainStatus = Literal["completed", "failed", "cancelled"]


@dataclass(frozen=True)
class TrainResult(_DictView):
    """The outcome of ``train()`` on any backend.

    ``model_name`` is what to load or call afterwards: the tuned model's folder
    for the local backend, the tuned model's name on Lamini. ``run_dir`` is the
    local run directory (checkpoints, loss curve, metadata) and ``job_id`` the
    remote job; each is None where it does not apply. ``metrics`` summarises the
    run (``train_loss_first``/``_last``/``_min``, ``eval_loss_initial``,
    ``eval_loss``, ``steps``, ``tokens_per_second``...); ``loss_history`` holds
    ``(step, train_loss)`` points and ``eval`` the final evaluation when one ran.

    It also reads as the 2023 status dict: ``result["model_name"]``,
    ``result["job_id"]`` (the run directory's path for a local run, which has no
    remote job) and ``result["status"]`` (``"COMPLETED"``, ``"FAILED"``, ``"CANCELLED"``).
    """

    model_name: str
    status: TrainStatus = "completed"
    metrics: Mapping[str, float] = field(default_factory=dict, hash=False)
    run_dir: Path | None = None
    job_id: str | None = None
    loss_history: tuple[tuple[int, float], ...] = ()
    eval: EvalResult | None = None

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-ready data."""
        return {
            "model_name": self.model_name,
            "status": self.status,
            "metrics": dict(self.metrics),
            "run_dir": None if self.run_dir is None else str(self.run_dir),
            "job_id": self.job_id,
            "loss_history": [list(p) for p in self.loss_history],
            "eval": None if self.eval is None else self.eval.to_dict(),
        }

    def as_2023_dict(self) -> dict[str, Any]:
        """The result in the shape of Lamini's 2023 job status dict (see the class docstring)."""
        data = self.to_dict()
        if self.job_id is None and self.run_dir is not None:
            data["job_id"] = str(self.run_dir)
        data["status"] = self.status.upper()
        return data


def completions_match(expected: str, got: str) -> bool:
    """Exact match after stripping whitespace; JSON texts are compared as parsed JSON."""
    a, b = expected.strip(), got.strip()
    if a == b:
        return True
    if a[:1] in "{[" and b[:1] in "{[":
        try:
            return bool(json.loads(a) == json.loads(b))
        except ValueError:
            return False
    return False


def resolve_model_dir(path: str | Path) -> Path:
    """The loadable model folder for ``path``: itself, or the tuned model of a run directory.

    A run directory written by local training holds the final model in a
    sub-folder named in its :data:`RUN_METADATA_FILE`; any other path is
    returned unchanged.
    """
    p = Path(path)
    meta = p / RUN_METADATA_FILE
    if (p / "config.json").is_file() or (p / "adapter_config.json").is_file() or not meta.is_file():
        return p
    try:
        sub = json.loads(meta.read_text(encoding="utf-8")).get("model_dir")
    except (OSError, ValueError, AttributeError):
        return p
    if isinstance(sub, str) and sub and (p / sub).is_dir():
        return p / sub
    return p
