"""Atomic checkpoints of a local fine-tuning run, and resuming from them.

A checkpoint is written into a fresh temporary folder next to its final place,
every file is fsynced, and only then is the folder renamed to
``checkpoints/step-<N>``. A crash or an error mid-save leaves at most a
``.tmp-*`` folder that is ignored and later removed, so the last good
checkpoint is never touched. Older checkpoints are pruned only after a newer
one is in place.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from llmrun.errors import TrainingError

CHECKPOINTS_DIR = "checkpoints"
_STEP_DIR = re.compile(r"^step-(\d{8})$")
_WEIGHTS = "trainable.safetensors"
_OPTIMIZER = "optimizer.pt"
_STATE = "state.json"
_TMP_PREFIX = ".tmp-"
_OLD_PREFIX = ".old-"


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # platforms that cannot open directories (Windows)
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            _fsync_file(Path(dirpath) / name)
        _fsync_dir(Path(dirpath))


@contextlib.contextmanager
def atomic_directory(final: Path) -> Iterator[Path]:
    """Yield an empty temporary folder that becomes ``final`` when the block succeeds.

    The folder is fsynced and renamed into place; an existing ``final`` is
    replaced only after the new content is complete. If the block raises, the
    temporary folder is removed and ``final`` is left as it was.
    """
    parent = final.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{final.name}-", dir=parent))
    try:
        yield tmp
        _fsync_tree(tmp)
        if final.exists():
            old = parent / f"{_OLD_PREFIX}{final.name}-{uuid.uuid4().hex[:8]}"
            os.replace(final, old)
            os.replace(tmp, final)
            _fsync_dir(parent)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
            _fsync_dir(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` as JSON to ``path`` through a fsynced temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{_TMP_PREFIX}{path.name}-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The parameters that training updates, by name (contiguous CPU copies)."""
    return {
        name: p.detach().to("cpu").contiguous() for name, p in model.named_parameters() if p.requires_grad
    }


@dataclass(frozen=True)
class Checkpoint:
    """A complete checkpoint on disk."""

    path: Path
    step: int

    def state(self) -> dict[str, Any]:
        """The loop state saved with the checkpoint (step, epoch, histories...)."""
        data: dict[str, Any] = json.loads((self.path / _STATE).read_text(encoding="utf-8"))
        return data


def save_checkpoint(
    run_dir: Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    state: Mapping[str, Any],
    keep: int = 1,
) -> Checkpoint:
    """Write a checkpoint of ``step`` atomically, then prune all but the newest ``keep``."""
    root = run_dir / CHECKPOINTS_DIR
    remove_stale_temporaries(root)
    final = root / f"step-{step:08d}"
    with atomic_directory(final) as tmp:
        save_file(trainable_state(model), str(tmp / _WEIGHTS))
        rng: dict[str, Any] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
            rng["cuda"] = torch.cuda.get_rng_state_all()
        torch.save(
            {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng},
            tmp / _OPTIMIZER,
        )
        (tmp / _STATE).write_text(json.dumps(dict(state), indent=2, sort_keys=True), encoding="utf-8")
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old.path, ignore_errors=True)
    return Checkpoint(final, step)


def remove_stale_temporaries(root: Path) -> None:
    """Remove ``.tmp-*``/``.old-*`` folders left in ``root`` by an interrupted save."""
    if not root.is_dir():
        return
    for entry in root.iterdir():
        if entry.is_dir() and entry.name.startswith((_TMP_PREFIX, _OLD_PREFIX)):
            shutil.rmtree(entry, ignore_errors=True)


def _is_complete(path: Path) -> bool:
    return all((path / name).is_file() for name in (_WEIGHTS, _OPTIMIZER, _STATE))


def list_checkpoints(run_dir: Path) -> list[Checkpoint]:
    """The complete checkpoints of ``run_dir``, oldest first (temporaries ignored)."""
    root = run_dir / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = []
    for entry in root.iterdir():
        match = _STEP_DIR.match(entry.name)
        if match and entry.is_dir() and _is_complete(entry):
            found.append(Checkpoint(entry, int(match.group(1))))
    return sorted(found, key=lambda c: c.step)


def latest_checkpoint(run_dir: Path) -> Checkpoint | None:
    """The newest complete checkpoint of ``run_dir``, or None."""
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def load_checkpoint(
    checkpoint: Checkpoint,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> dict[str, Any]:
    """Restore trainable weights, optimizer, scheduler and RNG; return the loop state."""
    path = checkpoint.path
    try:
        weights = load_file(str(path / _WEIGHTS))
        expected = {name for name, p in model.named_parameters() if p.requires_grad}
        if set(weights) != expected:
            missing = sorted(expected - set(weights))[:3]
            extra = sorted(set(weights) - expected)[:3]
            raise TrainingError(
                f"checkpoint {path} does not match the model being trained (missing {missing}, "
                f"unexpected {extra}); resume with the same model and method, or start a new run directory"
            )
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, tensor in weights.items():
                params[name].copy_(tensor.to(params[name].device, params[name].dtype))
        saved = torch.load(path / _OPTIMIZER, map_location="cpu", weights_only=True)
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        torch.set_rng_state(saved["rng"]["torch"])
        if "cuda" in saved["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(saved["rng"]["cuda"])
        return checkpoint.state()
    except TrainingError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise TrainingError(f"cannot resume from checkpoint {path}: {exc}") from exc
