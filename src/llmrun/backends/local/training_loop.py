"""The local training loop: data order, optimizer and schedule, steps, loss checks, checkpoints.

:func:`run_loop` runs optimizer steps from where a :class:`Progress` stands to the end of the
:class:`Plan`, checkpointing atomically on the way (:mod:`.checkpointing`), so a run can resume
exactly where its last complete checkpoint left it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from llmrun.backends.local import checkpointing
from llmrun.backends.local.batching import (
    Batch,
    EncodedExample,
    collate,
    completion_loss_sum,
    uses_plain_head,
)
from llmrun.backends.local.evaluation import autocast, heldout_loss, model_device
from llmrun.errors import TrainingError
from llmrun.training import TrainingExample, TrainOptions

log = logging.getLogger("llmrun.training")


@dataclass
class Progress:
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
    def from_state(cls, state: dict[str, Any]) -> Progress:
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
class Plan:
    """How many batches and optimizer steps the run has."""

    batches_per_epoch: int
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int


def plan_run(num_train: int, options: TrainOptions) -> Plan:
    batches = math.ceil(num_train / options.batch_size)
    steps_per_epoch = math.ceil(batches / options.gradient_accumulation_steps)
    total = options.max_steps if options.max_steps is not None else options.epochs * steps_per_epoch
    return Plan(batches, steps_per_epoch, total, math.ceil(options.warmup_ratio * total))


def epoch_order(num_train: int, seed: int, epoch: int) -> list[int]:
    order = list(range(num_train))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return order


def data_fingerprint(examples: Sequence[TrainingExample]) -> str:
    digest = hashlib.sha256()
    for e in examples:
        digest.update(json.dumps([e.prompt, e.target]).encode("utf-8"))
    return digest.hexdigest()[:16]


def make_optimizer(model: torch.nn.Module, options: TrainOptions, lr: float) -> torch.optim.AdamW:
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


def make_scheduler(optimizer: torch.optim.Optimizer, plan: Plan) -> torch.optim.lr_scheduler.LambdaLR:
    warm, total = plan.warmup_steps, max(plan.total_steps, 1)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / (warm + 1)
        return max(0.0, (total - step) / max(1, total - warm))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def batches(
    train: Sequence[EncodedExample], options: TrainOptions, plan: Plan, pad: int, progress: Progress
) -> Iterator[tuple[int, int, list[Batch]]]:
    """Yield ``(epoch, next_batch_index, accumulation_group)`` from where ``progress`` stands."""
    accum = options.gradient_accumulation_steps
    epoch, start = progress.epoch, progress.batch_in_epoch
    while True:
        order = epoch_order(len(train), options.seed, epoch)
        for first in range(start, plan.batches_per_epoch, accum):
            group = []
            for b in range(first, min(first + accum, plan.batches_per_epoch)):
                idx = order[b * options.batch_size : (b + 1) * options.batch_size]
                group.append(collate([train[i] for i in idx], pad))
            yield epoch, first + len(group), group
        epoch, start = epoch + 1, 0


def run_loop(
    model: Any,
    train: Sequence[EncodedExample],
    held: Sequence[EncodedExample],
    options: TrainOptions,
    plan: Plan,
    pad: int,
    state: Progress,
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
        for epoch, next_batch, group in batches(train, options, plan, pad, state):
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
            flush_losses(pending, state, bar, scheduler)  # reads the device: the clock is exact here
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


def flush_losses(
    pending: list[tuple[int, torch.Tensor]],
    state: Progress,
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


def cpu_has_native_bf16() -> bool:
    checks = [
        getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    ]
    known = [check for check in checks if callable(check)]
    return not known or any(bool(check()) for check in known)
