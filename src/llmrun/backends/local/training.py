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
      checkpoints/step-<N>/   resumable state (trainable weights, optimizer, loop state),
                          removed once the run completes
      model/              the tuned model: safetensors weights or a LoRA adapter,
                          config, tokenizer, generation config, llmrun_run.json
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from llmrun.__about__ import __version__
from llmrun.backends.local import checkpointing, lora
from llmrun.backends.local.batching import (
    Batch,
    EncodedExample,
    collate,
    completion_loss_sum,
    encode_examples,
    pad_id,
    uses_plain_head,
)
from llmrun.backends.local.evaluation import autocast, evaluate_local, heldout_loss, model_device
from llmrun.errors import TrainingError
from llmrun.training import (
    RUN_METADATA_FILE,
    EvalResult,
    TrainingExample,
    TrainOptions,
    TrainResult,
    split_examples,
)

log = logging.getLogger("llmrun.training")

MODEL_DIR = "model"
#: Set on a model object whose weights include a merged LoRA adapter (the adapter folder).
_MERGED_ADAPTER_ATTR = "_llmrun_merged_adapter"
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


def new_run_dir(root: str | Path, model_name: str) -> Path:
    """A fresh, not yet existing run directory under ``root`` named after the model and the time."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(model_name).name or model_name).strip("-") or "model"
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{slug}-{stamp}"
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


@dataclass
class _Progress:
    """Mutable loop state, saved with every checkpoint."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0  # index of the next batch of ``epoch``
    tokens: int = 0
    seconds: float = 0.0
    losses: list[tuple[int, float]] = field(default_factory=list)
    eval_losses: list[tuple[int, float]] = field(default_factory=list)

    def to_state(self, fingerprint: str, options: TrainOptions) -> dict[str, Any]:
        return {
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "tokens": self.tokens,
            "seconds": self.seconds,
            "losses": self.losses,
            "eval_losses": self.eval_losses,
            "fingerprint": fingerprint,
            "options": options.to_dict(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> _Progress:
        return cls(
            step=int(state["step"]),
            epoch=int(state["epoch"]),
            batch_in_epoch=int(state["batch_in_epoch"]),
            tokens=int(state["tokens"]),
            seconds=float(state["seconds"]),
            losses=[(int(s), float(v)) for s, v in state["losses"]],
            eval_losses=[(int(s), float(v)) for s, v in state["eval_losses"]],
        )


@dataclass(frozen=True)
class _Plan:
    """How many batches and optimizer steps the run has."""

    batches_per_epoch: int
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int


def _plan(num_train: int, options: TrainOptions) -> _Plan:
    batches = math.ceil(num_train / options.batch_size)
    steps_per_epoch = math.ceil(batches / options.gradient_accumulation_steps)
    total = options.max_steps if options.max_steps is not None else options.epochs * steps_per_epoch
    return _Plan(batches, steps_per_epoch, total, math.ceil(options.warmup_ratio * total))


def _epoch_order(num_train: int, seed: int, epoch: int) -> list[int]:
    order = list(range(num_train))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return order


def _fingerprint(examples: Sequence[TrainingExample]) -> str:
    digest = hashlib.sha256()
    for e in examples:
        digest.update(json.dumps([e.prompt, e.target]).encode("utf-8"))
    return digest.hexdigest()[:16]


def _optimizer(model: torch.nn.Module, options: TrainOptions, lr: float) -> torch.optim.AdamW:
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": options.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    try:  # the fused kernel is several times faster than foreach, on CPU too (torch >= 2.4)
        return torch.optim.AdamW(groups, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(groups, lr=lr)


def _scheduler(optimizer: torch.optim.Optimizer, plan: _Plan) -> torch.optim.lr_scheduler.LambdaLR:
    warm, total = plan.warmup_steps, max(plan.total_steps, 1)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / (warm + 1)
        return max(0.0, (total - step) / max(1, total - warm))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _batches(
    train: Sequence[EncodedExample], options: TrainOptions, plan: _Plan, pad: int, progress: _Progress
) -> Iterator[tuple[int, int, list[Batch]]]:
    """Yield ``(epoch, next_batch_index, accumulation_group)`` from where ``progress`` stands."""
    accum = options.gradient_accumulation_steps
    epoch, start = progress.epoch, progress.batch_in_epoch
    while True:
        order = _epoch_order(len(train), options.seed, epoch)
        for first in range(start, plan.batches_per_epoch, accum):
            group = []
            for b in range(first, min(first + accum, plan.batches_per_epoch)):
                idx = order[b * options.batch_size : (b + 1) * options.batch_size]
                group.append(collate([train[i] for i in idx], pad))
            yield epoch, first + len(group), group
        epoch, start = epoch + 1, 0


def train_local(
    model: Any,
    tokenizer: Any,
    examples: Sequence[TrainingExample],
    options: TrainOptions,
    run_dir: str | Path,
    *,
    progress: bool = True,
    base_model: str | None = None,
) -> TrainResult:
    """Fine-tune ``model`` on ``examples`` and save the run into ``run_dir``.

    ``model`` is a loaded transformers causal LM and is trained in place; on
    return it is the tuned model, in eval mode. ``base_model`` (default: the
    model's ``name_or_path``) is recorded so a LoRA adapter can find its base.
    ``progress`` shows a tqdm bar. A ``run_dir`` that already holds checkpoints
    is only reused with ``options.resume``; nothing is written over the last
    good checkpoint unless a newer one is complete. Errors during training
    raise :class:`~llmrun.errors.TrainingError`.
    """
    run_dir = Path(run_dir)
    if not examples:
        raise TrainingError("no training examples; load data before calling train()")
    merged_from = getattr(model, _MERGED_ADAPTER_ATTR, None)
    checkpointing.ensure_writable(run_dir)
    existing = checkpointing.latest_checkpoint(run_dir)
    if existing is not None and not options.resume:
        raise TrainingError(
            f"{run_dir} already holds a checkpoint (step {existing.step}); pass resume=True to continue "
            "that run, or choose a new run directory"
        )
    base_name = _base_model_name(model, base_model)
    train_ex, held_ex = split_examples(examples, options.eval_fraction, options.seed)
    if not train_ex:
        raise TrainingError("no examples left for training after the held-out split; lower eval_fraction")
    max_length = _model_max_length(model, options.max_length)
    train_enc = encode_examples(tokenizer, train_ex, max_length)
    held_enc = encode_examples(tokenizer, held_ex, max_length) if held_ex else []
    num_params = sum(p.numel() for p in model.parameters())
    method = options.resolved_method(num_params)
    if method == "lora" and merged_from is not None:
        raise TrainingError(
            f"this model already holds the merged LoRA adapter of {merged_from}, which no saved base model "
            "has; load the base model again before training a new adapter, or train with method='full'"
        )
    lr = options.resolved_learning_rate(method)
    plan = _plan(len(train_enc), options)
    pad = pad_id(tokenizer)
    device = model_device(model)
    log.info(
        "fine-tuning %s (%s, %.1fM parameters) on %d examples (%d held out): %d steps, lr %.2g, device %s",
        base_name,
        method,
        num_params / 1e6,
        len(train_enc),
        len(held_enc),
        plan.total_steps,
        lr,
        device,
    )

    if options.bf16 and device.type == "cpu" and not _cpu_has_native_bf16():
        log.warning("bf16 autocast on this CPU (no AVX512-BF16/AMX) is emulated and much slower than float32")
    peft_model = lora.add_lora(model, options) if method == "lora" else None
    if method == "full":
        if any(p.dtype in (torch.float16, torch.bfloat16) for p in model.parameters()):
            log.warning("full fine-tuning of half-precision weights is unstable; load the model in float32")
        for p in model.parameters():
            p.requires_grad_(True)
    use_cache = getattr(model.config, "use_cache", None)
    if options.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    optimizer = _optimizer(model, options, lr)
    scheduler = _scheduler(optimizer, plan)
    fingerprint = _fingerprint(examples)
    state = _Progress()
    if options.resume and existing is not None:
        saved = checkpointing.load_checkpoint(existing, model, optimizer, scheduler)
        _check_resumable(saved, fingerprint, options, existing.path)
        state = _Progress.from_state(saved)
        log.info("resuming from %s (step %d of %d)", existing.path, state.step, plan.total_steps)
    elif options.resume:
        log.warning("resume=True but %s has no checkpoint: starting from the beginning", run_dir)
    torch.manual_seed(options.seed + state.step)

    try:
        if not state.eval_losses and held_enc:
            state.eval_losses.append(
                (0, heldout_loss(model, held_enc, pad, options.batch_size, options.bf16)[0])
            )
        _loop(
            model,
            train_enc,
            held_enc,
            options,
            plan,
            pad,
            state,
            optimizer,
            scheduler,
            fingerprint,
            run_dir,
            progress,
        )
    except TrainingError:
        raise
    except KeyboardInterrupt:
        log.warning("training interrupted; the last complete checkpoint in %s is kept", run_dir)
        raise
    except (RuntimeError, ValueError, OSError) as exc:
        raise TrainingError(
            f"fine-tuning failed at step {state.step}: {exc}; the last complete checkpoint in {run_dir} "
            "is kept (resume=True continues from it)"
        ) from exc
    finally:
        if options.gradient_checkpointing:
            model.gradient_checkpointing_disable()
        if use_cache is not None:
            model.config.use_cache = use_cache
        model.eval()

    meta: dict[str, Any] = {
        "format": 1,
        "llmrun_version": __version__,
        "base_model": base_name,
        "method": method,
        "model_dir": MODEL_DIR,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "num_examples": len(examples),
        "num_train": len(train_enc),
        "num_heldout": len(held_enc),
        "options": options.to_dict(),
        "learning_rate": lr,
        "metrics": _metrics(state, plan, None),
        "eval": None,
    }
    _save_final(model, tokenizer, peft_model, run_dir, base_name, meta)
    _plot_losses(state, run_dir / LOSS_PLOT)
    if peft_model is not None:
        lora.merge_into_base(peft_model)  # the same model object now holds the tuned weights
        setattr(model, _MERGED_ADAPTER_ATTR, str(run_dir / MODEL_DIR))
    else:  # a later run on this object builds on the saved tuned model
        model.name_or_path = model.config._name_or_path = str(run_dir / MODEL_DIR)
    final_eval = evaluate_local(model, tokenizer, held_ex, options, split=False) if held_ex else None
    metrics = _metrics(state, plan, final_eval)
    meta.update(metrics=metrics, eval=None if final_eval is None else final_eval.to_dict())
    checkpointing.write_json_atomic(run_dir / MODEL_DIR / RUN_METADATA_FILE, meta)
    checkpointing.write_json_atomic(run_dir / RUN_METADATA_FILE, meta)
    checkpointing.remove_checkpoints(run_dir)  # the run is complete: nothing left to resume
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


def _loop(
    model: Any,
    train: Sequence[EncodedExample],
    held: Sequence[EncodedExample],
    options: TrainOptions,
    plan: _Plan,
    pad: int,
    state: _Progress,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    fingerprint: str,
    run_dir: Path,
    show_progress: bool,
) -> None:
    """Run optimizer steps from ``state.step`` to ``plan.total_steps``, checkpointing on the way."""
    from tqdm.auto import tqdm

    device = model_device(model)
    plain = uses_plain_head(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    model.train()
    if hasattr(model.config, "use_cache"):
        model.config.use_cache = False
    bar = tqdm(
        total=plan.total_steps,
        initial=state.step,
        disable=not show_progress,
        desc="fine-tuning",
        unit="step",
        dynamic_ncols=True,
    )
    pending: list[tuple[int, torch.Tensor]] = []  # losses not yet read back from the device
    started = time.perf_counter()
    try:
        for epoch, next_batch, group in _batches(train, options, plan, pad, state):
            if state.step >= plan.total_steps:
                break
            targets = sum(b.num_targets for b in group)
            step_loss = torch.zeros((), device=device)
            for batch in group:
                batch = batch.to(device)
                with autocast(device, options.bf16):
                    loss = completion_loss_sum(model, batch, plain) / max(targets, 1)
                loss.backward()  # type: ignore[no-untyped-call]
                step_loss += loss.detach()
            if options.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(trainable, options.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state.step += 1
            state.tokens += sum(b.num_tokens for b in group)
            state.epoch, state.batch_in_epoch = epoch, next_batch
            if next_batch >= plan.batches_per_epoch:
                state.epoch, state.batch_in_epoch = epoch + 1, 0
            pending.append((state.step, step_loss))
            bar.update(1)

            end_of_epoch = state.batch_in_epoch == 0
            last = state.step >= plan.total_steps
            log_now = state.step % options.log_every_steps == 0 or end_of_epoch or last
            every = options.save_every_steps
            save_now = last or (end_of_epoch if every is None else state.step % every == 0)
            if not (log_now or save_now):
                continue
            _flush_losses(pending, state, bar, scheduler)  # reads the device: the clock is exact here
            state.seconds += time.perf_counter() - started
            if held and (end_of_epoch or last):
                held_loss = heldout_loss(model, held, pad, options.batch_size, options.bf16)[0]
                state.eval_losses.append((state.step, held_loss))
                log.info("step %d: held-out loss %.4f", state.step, held_loss)
            if save_now:
                checkpointing.save_checkpoint(
                    run_dir,
                    state.step,
                    model,
                    optimizer,
                    scheduler,
                    state.to_state(fingerprint, options),
                    options.keep_checkpoints,
                )
            started = time.perf_counter()
    finally:
        bar.close()


def _flush_losses(
    pending: list[tuple[int, torch.Tensor]],
    state: _Progress,
    bar: Any,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> None:
    """Read pending step losses back from the device, check them, log the latest."""
    if not pending:
        return
    values = torch.stack([t for _, t in pending]).tolist()
    for (step, _), value in zip(pending, values, strict=True):
        if not math.isfinite(value):
            raise TrainingError(
                f"the training loss became {value} at step {step}; lower learning_rate, or turn off bf16; "
                "no checkpoint was written for this step"
            )
        state.losses.append((step, float(value)))
    pending.clear()
    step, loss = state.losses[-1]
    lr = scheduler.get_last_lr()[0]
    bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}")
    log.info("step %d: loss %.4f, lr %.3g", step, loss, lr)


def _cpu_has_native_bf16() -> bool:
    checks = [
        getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    ]
    known = [check for check in checks if callable(check)]
    return not known or any(bool(check()) for check in known)


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


def _model_max_length(model: Any, requested: int) -> int:
    limit = getattr(model.config, "max_position_embeddings", None)
    if isinstance(limit, int) and 0 < limit < requested:
        log.info("max_length %d exceeds the model's context (%d); using %d", requested, limit, limit)
        return limit
    return requested


def _metrics(state: _Progress, plan: _Plan, final_eval: EvalResult | None) -> dict[str, float]:
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


def _plot_losses(state: _Progress, dest: Path) -> None:
    """Save the loss curve as a PNG (matplotlib's Agg canvas; no global backend change)."""
    if not state.losses:
        return
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:  # pragma: no cover - matplotlib is part of the local extra
        log.warning("matplotlib is not installed: no loss curve saved")
        return
    fig = Figure(figsize=(7, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    steps, values = zip(*state.losses, strict=True)
    ax.plot(steps, values, label="train loss", linewidth=1)
    if state.eval_losses:
        e_steps, e_values = zip(*state.eval_losses, strict=True)
        ax.plot(e_steps, e_values, "o-", label="held-out loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy per completion token")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = dest.with_name(f".tmp-{dest.name}")
    fig.savefig(str(tmp), format="png")
    tmp.replace(dest)
