"""Local fine-tuning: a plain torch loop (AdamW, linear warmup/decay), no HF Trainer.

``train_local`` trains a loaded transformers model in place (full fine-tuning,
or LoRA through peft), checkpoints atomically into a run directory, can resume,
saves the tuned model as a loadable folder with a loss curve and metadata, and
evaluates on the held-out split. Afterwards the same model object is the tuned
model (a LoRA adapter is merged into its weights).

Run directory layout::

    run_dir/
      llmrun_run.json     base model, method, options, metrics
      loss.png            training (and held-out) loss curve
      checkpoints/step-<N>/   resumable state (trainable weights, optimizer, loop state)
      model/              the tuned model: safetensors weights or a LoRA adapter,
                          config, tokenizer, generation config, llmrun_run.json
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from llmrun.__about__ import __version__
from llmrun.backends.local import checkpointing, lora
from llmrun.backends.local.batching import EncodedExample, encode_examples, pad_id
from llmrun.backends.local.evaluation import evaluate_local, heldout_loss, model_device
from llmrun.backends.local.plotting import plot_losses
from llmrun.backends.local.runs import MERGED_ADAPTER_ATTR, ModelSnapshot
from llmrun.backends.local.training_loop import (
    Plan,
    Progress,
    cpu_has_native_bf16,
    data_fingerprint,
    make_optimizer,
    make_scheduler,
    plan_run,
    run_loop,
)
from llmrun.errors import TrainingError
from llmrun.training import (
    RUN_METADATA_FILE,
    EvalResult,
    TrainingExample,
    TrainOptions,
    TrainResult,
    split_examples,
)

if TYPE_CHECKING:
    from llmrun.backends.local.engine import LocalEngine

log = logging.getLogger("llmrun.training")

MODEL_DIR = "model"
LOSS_PLOT = "loss.png"

#: Options that must not change when a run resumes (they define the data order and schedule).
_RESUME_KEYS = (
    "method",
    "epochs",
    "max_steps",
    "learning_rate",
    "batch_size",
    "gradient_accumulation_steps",
    "max_length",
    "warmup_ratio",
    "weight_decay",
    "seed",
    "eval_fraction",
    "lora_r",
    "lora_alpha",
    "lora_target_modules",
)


@dataclass(frozen=True)
class _Setup:
    """Everything a run needs, checked before the model is touched."""

    run_dir: Path
    base_name: str
    method: Literal["full", "lora"]
    lr: float
    train_enc: list[EncodedExample]
    held_ex: list[TrainingExample]
    held_enc: list[EncodedExample]
    plan: Plan
    pad: int
    existing: checkpointing.Checkpoint | None
    fingerprint: str


def train_local(
    engine: LocalEngine,
    examples: Sequence[TrainingExample],
    options: TrainOptions,
    run_dir: str | Path,
    *,
    progress: bool = True,
    base_model: str | None = None,
) -> TrainResult:
    """Fine-tune the engine's model on ``examples`` and save the run into ``run_dir``.

    The model (a loaded transformers causal LM) is trained in place; on return it is the tuned
    model, in eval mode, and the final evaluation has run through ``engine``. The call is
    all-or-nothing for the model: when it fails, the model gets back the weights and state it
    had (adapter layers removed, ``requires_grad`` off, its name) and the error is a
    :class:`~llmrun.errors.TrainingError`. ``base_model`` (default: the model's
    ``name_or_path``) is recorded so a LoRA adapter can find its base. ``progress`` shows a
    tqdm bar. A ``run_dir`` that already holds checkpoints is only reused with
    ``options.resume``; nothing is written over the last good checkpoint unless a newer one is
    complete.
    """
    model = engine.model
    setup = _prepare(engine, examples, options, Path(run_dir), base_model)
    targets = lora.target_modules(model, options) if setup.method == "lora" else None
    snapshot = ModelSnapshot.take(model, targets)
    state = Progress()
    peft_model: Any = None
    merged = False
    try:
        peft_model = lora.add_lora(model, options) if setup.method == "lora" else None
        _train(engine, setup, options, state, progress)
        meta = _save_run(engine, setup, options, state, peft_model, len(examples))
        if peft_model is not None:
            lora.merge_into_base(peft_model)  # the same model object now holds the tuned weights
            merged = True
            setattr(model, MERGED_ADAPTER_ATTR, str(setup.run_dir / MODEL_DIR))
        else:  # a later run on this object builds on the saved tuned model
            model.name_or_path = model.config._name_or_path = str(setup.run_dir / MODEL_DIR)
        engine.refresh()  # the final evaluation decodes with the tuned weights
        return _finish(engine, setup, options, state, meta)
    except BaseException as exc:
        if peft_model is not None and not merged:
            lora.remove_adapters(peft_model)
        snapshot.restore(model)
        model.eval()
        error = _as_training_error(exc, state, setup.run_dir)
        if error is exc:
            raise
        raise error from exc


def _prepare(
    engine: LocalEngine,
    examples: Sequence[TrainingExample],
    options: TrainOptions,
    run_dir: Path,
    base_model: str | None,
) -> _Setup:
    model, tokenizer = engine.model, engine.tokenizer
    if not examples:
        raise TrainingError("no training examples; load data before calling train()")
    existing = checkpointing.latest_checkpoint(run_dir)
    if existing is not None and not options.resume:
        raise TrainingError(
            f"{run_dir} already holds a checkpoint (step {existing.step}); pass resume=True to continue "
            "that run, or choose a new run directory"
        )
    fingerprint = data_fingerprint(examples)
    if options.resume and existing is not None:
        _check_resumable(existing.state(), fingerprint, options, existing.path)
    train_ex, held_ex = split_examples(examples, options.eval_fraction, options.seed)
    if not train_ex:
        raise TrainingError("no examples left for training after the held-out split; lower eval_fraction")
    max_length = min(options.max_length, engine.context_length)
    if max_length < options.max_length:
        log.info("max_length %d exceeds the model's context (%d); using it", options.max_length, max_length)
    train_enc = encode_examples(tokenizer, train_ex, max_length)
    held_enc = encode_examples(tokenizer, held_ex, max_length) if held_ex else []
    num_params = sum(p.numel() for p in model.parameters())
    method = options.resolved_method(num_params)
    merged_from = getattr(model, MERGED_ADAPTER_ATTR, None)
    if method == "lora" and merged_from is not None:
        raise TrainingError(
            f"this model already holds the merged LoRA adapter of {merged_from}, which no saved base model "
            "has; load the base model again before training a new adapter, or train with method='full'"
        )
    setup = _Setup(
        run_dir=run_dir,
        base_name=_base_model_name(model, base_model),
        method=method,
        lr=options.resolved_learning_rate(method),
        train_enc=train_enc,
        held_ex=list(held_ex),
        held_enc=held_enc,
        plan=plan_run(len(train_enc), options),
        pad=pad_id(tokenizer),
        existing=existing,
        fingerprint=fingerprint,
    )
    device = model_device(model)
    log.info(
        "fine-tuning %s (%s, %.1fM parameters) on %d examples (%d held out): %d steps, lr %.2g, device %s",
        setup.base_name,
        method,
        num_params / 1e6,
        len(train_enc),
        len(held_enc),
        setup.plan.total_steps,
        setup.lr,
        device,
    )
    if options.bf16 and device.type == "cpu" and not cpu_has_native_bf16():
        log.warning("bf16 autocast on this CPU (no AVX512-BF16/AMX) is emulated and much slower than float32")
    return setup


def _train(
    engine: LocalEngine, setup: _Setup, options: TrainOptions, state: Progress, progress: bool
) -> None:
    """Resume if asked, then run the loop; the model is left in eval mode with its cache setting."""
    model = engine.model
    if setup.method == "full":
        if any(p.dtype in (torch.float16, torch.bfloat16) for p in model.parameters()):
            log.warning("full fine-tuning of half-precision weights is unstable; load the model in float32")
        for p in model.parameters():
            p.requires_grad_(True)
    use_cache = getattr(model.config, "use_cache", None)
    if options.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    optimizer = make_optimizer(model, options, setup.lr)
    scheduler = make_scheduler(optimizer, setup.plan)
    try:
        if options.resume and setup.existing is not None:
            saved = checkpointing.load_checkpoint(setup.existing, model, optimizer, scheduler)
            restored = Progress.from_state(saved)
            state.__dict__.update(restored.__dict__)
            log.info(
                "resuming from %s (step %d of %d)", setup.existing.path, state.step, setup.plan.total_steps
            )
        elif options.resume:
            log.warning("resume=True but %s has no checkpoint: starting from the beginning", setup.run_dir)
        torch.manual_seed(options.seed + state.step)
        if not state.eval_losses and setup.held_enc:
            loss = heldout_loss(model, setup.held_enc, setup.pad, options.batch_size, options.bf16)[0]
            state.eval_losses.append((0, loss))
        run_loop(
            model,
            setup.train_enc,
            setup.held_enc,
            options,
            setup.plan,
            setup.pad,
            state,
            optimizer,
            scheduler,
            setup.fingerprint,
            setup.run_dir,
            progress,
        )
    finally:
        if options.gradient_checkpointing:
            model.gradient_checkpointing_disable()
        if use_cache is not None:
            model.config.use_cache = use_cache
        model.eval()


def _save_run(
    engine: LocalEngine,
    setup: _Setup,
    options: TrainOptions,
    state: Progress,
    peft_model: Any,
    num_examples: int,
) -> dict[str, Any]:
    """Write the tuned model folder and the loss curve; the run's metadata so far."""
    meta: dict[str, Any] = {
        "format": 1,
        "llmrun_version": __version__,
        "base_model": setup.base_name,
        "method": setup.method,
        "model_dir": MODEL_DIR,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "num_examples": num_examples,
        "num_train": len(setup.train_enc),
        "num_heldout": len(setup.held_enc),
        "options": options.to_dict(),
        "learning_rate": setup.lr,
        "metrics": _metrics(state, setup.plan, None),
        "eval": None,
    }
    _save_final(engine.model, engine.tokenizer, peft_model, setup.run_dir, setup.base_name, meta)
    plot_losses(state, setup.run_dir / LOSS_PLOT)
    return meta


def _finish(
    engine: LocalEngine, setup: _Setup, options: TrainOptions, state: Progress, meta: dict[str, Any]
) -> TrainResult:
    """Evaluate the tuned model through the engine, write the metadata, freeze the weights."""
    model, run_dir = engine.model, setup.run_dir
    final_eval = evaluate_local(engine, setup.held_ex, options, split=False) if setup.held_ex else None
    metrics = _metrics(state, setup.plan, final_eval)
    meta.update(metrics=metrics, eval=None if final_eval is None else final_eval.to_dict())
    checkpointing.write_json_atomic(run_dir / MODEL_DIR / RUN_METADATA_FILE, meta)
    checkpointing.write_json_atomic(run_dir / RUN_METADATA_FILE, meta)
    for p in model.parameters():
        p.requires_grad_(False)
    model.eval()
    log.info("fine-tuning done: %s", ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    return TrainResult(
        model_name=str(run_dir / MODEL_DIR),
        status="completed",
        metrics=metrics,
        run_dir=run_dir,
        loss_history=tuple(state.losses),
        eval=final_eval,
    )


def _as_training_error(exc: BaseException, state: Progress, run_dir: Path) -> BaseException:
    """The error a failed run raises; the model was restored before."""
    kept = (
        f"the model is unchanged; the last complete checkpoint in {run_dir} is kept "
        "(resume=True continues from it)"
    )
    if isinstance(exc, KeyboardInterrupt):
        log.warning("training interrupted; %s", kept)
        return exc
    if isinstance(exc, TrainingError):
        return TrainingError(f"{exc}; {kept}")
    if isinstance(exc, RuntimeError | ValueError | OSError):
        return TrainingError(f"fine-tuning failed at step {state.step}: {exc}; {kept}")
    return exc


def _check_resumable(saved: dict[str, Any], fingerprint: str, options: TrainOptions, path: Path) -> None:
    if saved.get("fingerprint") != fingerprint:
        raise TrainingError(
            f"checkpoint {path} was made with different training data; resume with the same data, "
            "or start a new run directory"
        )
    before = saved.get("options", {})
    now = options.to_dict()
    changed = [k for k in _RESUME_KEYS if before.get(k) != now.get(k)]
    if changed:
        detail = ", ".join(f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in changed)
        raise TrainingError(
            f"cannot resume from {path}: these options changed since it was saved ({detail}); "
            "use the same options, or start a new run directory"
        )


def _base_model_name(model: Any, base_model: str | None) -> str:
    name = base_model or getattr(model, "name_or_path", "") or getattr(model.config, "_name_or_path", "")
    if not name:
        return type(model).__name__
    path = Path(name)
    return str(path.resolve()) if path.is_dir() else str(name)


def _metrics(state: Progress, plan: Plan, final_eval: EvalResult | None) -> dict[str, float]:
    metrics: dict[str, float] = {
        "steps": float(state.step),
        "epochs": state.step / max(plan.steps_per_epoch, 1),
    }
    if state.losses:
        values = [v for _, v in state.losses]
        metrics.update(train_loss_first=values[0], train_loss_last=values[-1], train_loss_min=min(values))
    if state.eval_losses:
        metrics["eval_loss_initial"] = state.eval_losses[0][1]
        metrics["eval_loss"] = state.eval_losses[-1][1]
    if final_eval is not None and final_eval.exact_match is not None:
        metrics["eval_exact_match"] = final_eval.exact_match
    metrics["train_tokens"] = float(state.tokens)
    metrics["train_seconds"] = state.seconds
    if state.seconds > 0:
        metrics["tokens_per_second"] = state.tokens / state.seconds
    return metrics


def _save_final(
    model: Any, tokenizer: Any, peft_model: Any, run_dir: Path, base_name: str, meta: dict[str, Any]
) -> None:
    """Write the tuned model folder atomically: weights or adapter, config, tokenizer, metadata."""
    checkpointing.remove_stale_temporaries(run_dir)
    with checkpointing.atomic_directory(run_dir / MODEL_DIR) as tmp:
        if peft_model is not None:
            lora.save_adapter(peft_model, tmp, base_name)
        else:
            model.save_pretrained(str(tmp))
        generation_config = getattr(model, "generation_config", None)
        if generation_config is not None:
            generation_config.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        for stray in tmp.glob("*.bin"):  # safetensors only
            stray.unlink()
        (tmp / RUN_METADATA_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True), encoding="utf-8")
