"""Atomic checkpoints of a local fine-tuning run, and resuming from them.

A checkpoint is written into a fresh temporary folder next to its final place,
every file is fsynced, and only then is the folder renamed to
``checkpoints/step-<N>``. A crash or an error mid-save leaves at most a
``.tmp-*`` folder that is ignored and later removed, so the last good
checkpoint is never touched. Older checkpoints are pruned only after a newer
one is in place.

Each checkpoint carries a manifest of its files' SHA-256 sums. Resuming checks
it first: a truncated or altered checkpoint is skipped, with a warning, for the
newest older one that ``keep_checkpoints`` kept. Folders and files get the
permissions the umask gives (not the 0700 of a temporary folder), and a full disk
is reported as such. A completed run keeps only its final checkpoint, without
the optimizer's moments (twice the weights' size, needed only to take more
steps, which a completed run never does): resuming it still finds where it ended.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
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

log = logging.getLogger("llmrun.training")

CHECKPOINTS_DIR = "checkpoints"
_STEP_DIR = re.compile(r"^step-(\d{8})$")
_WEIGHTS = "trainable.safetensors"
_OPTIMIZER = "optimizer.pt"
_STATE = "state.json"
_MANIFEST = "manifest.json"
#: Less free space than this after a failed write means the disk filled up.
_FULL_DISK_BYTES = 16 * 1024 * 1024
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


def current_umask() -> int:
    """The process umask, read without changing it where the platform allows."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: read it by setting it, and put it back at once
    os.umask(mask)
    return mask


def apply_umask(root: Path) -> None:
    """Give ``root`` and everything in it the modes a plain ``mkdir``/``open`` would have.

    ``tempfile.mkdtemp`` makes folders 0700 and some writers make files 0600;
    a tuned model must be as readable as any other file its owner writes.
    """
    mask = current_umask()
    os.chmod(root, 0o777 & ~mask)
    for dirpath, dirs, files in os.walk(root):
        for name, mode in [(d, 0o777) for d in dirs] + [(f, 0o666) for f in files]:
            path = Path(dirpath) / name
            if not path.is_symlink():  # never change what a link points to
                os.chmod(path, mode & ~mask)


def disk_full_error(exc: BaseException, where: Path) -> TrainingError | None:
    """A :class:`TrainingError` that says the disk is full, when ``exc`` came from a full disk.

    Writers report it differently: an ``OSError`` with ENOSPC, safetensors' "os error 28",
    or torch's bare "unexpected pos" with no space left behind it.
    """
    text = str(exc)
    full = isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
    full = full or "No space left on device" in text or "os error 28" in text.lower()
    if not full:
        try:
            full = shutil.disk_usage(where).free < _FULL_DISK_BYTES
        except OSError:
            full = False
    if not full:
        return None
    return TrainingError(
        f"the disk is full (ENOSPC: No space left on device) while writing {where}; free some space "
        "there or choose another folder (runs_dir=...), then resume with resume=True. "
        f"The writer said: {text}"
    )


@contextlib.contextmanager
def atomic_directory(final: Path) -> Iterator[Path]:
    """Yield an empty temporary folder that becomes ``final`` when the block succeeds.

    The folder is fsynced and renamed into place; an existing ``final`` is
    replaced only after the new content is complete. If the block raises, the
    temporary folder is removed and ``final`` is left as it was; a full disk
    raises :class:`TrainingError` saying so. The folder and its files get the
    umask's permissions.
    """
    parent = final.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{final.name}-", dir=parent))
    try:
        yield tmp
        apply_umask(tmp)
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
    except TrainingError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except Exception as exc:
        full = disk_full_error(exc, parent)
        shutil.rmtree(tmp, ignore_errors=True)
        if full is not None:
            raise full from exc
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def ensure_writable(folder: Path) -> None:
    """Fail now, not after an epoch, when ``folder`` cannot be created or written to.

    Folders this check creates are removed again, so a failed check leaves nothing.
    """
    folder = Path(folder)
    created: list[Path] = []
    probe = folder / f"{_TMP_PREFIX}write-check-{uuid.uuid4().hex[:8]}"
    try:
        for part in reversed([folder, *folder.parents]):
            if not part.exists():
                part.mkdir()
                created.append(part)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise TrainingError(
            f"cannot write the run directory {folder}: {exc.strerror or exc}; nothing was trained and the "
            "model is unchanged. Training saves checkpoints and the tuned model there: choose a writable "
            "folder (runs_dir=..., LLMRUN_RUNS_DIR or --runs-dir)"
        ) from None
    finally:
        with contextlib.suppress(OSError):
            probe.unlink(missing_ok=True)
        for part in reversed(created):
            with contextlib.suppress(OSError):
                part.rmdir()


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
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        full = disk_full_error(exc, path.parent)
        if full is not None:
            raise full from exc
        raise
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
        _write_manifest(tmp)
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old.path, ignore_errors=True)
    return Checkpoint(final, step)


def finish_checkpoints(run_dir: Path) -> None:
    """Slim the checkpoints of a completed run to its final one, without optimizer moments.

    AdamW keeps two moments per weight: for a full fine-tune of pythia-70m that is
    560 MB of a 840 MB checkpoint, needed only to take further steps, which a
    completed run never takes (``resume=True`` on it loads the final state and
    stops). The final checkpoint is rewritten atomically; older ones are removed.
    """
    found = list_checkpoints(Path(run_dir))
    if not found:
        return
    final = found[-1]
    saved = torch.load(final.path / _OPTIMIZER, map_location="cpu", weights_only=True)
    if saved["optimizer"].get("state"):
        saved["optimizer"]["state"] = {}
        with atomic_directory(final.path) as tmp:
            for name in (_WEIGHTS, _STATE):
                try:
                    os.link(final.path / name, tmp / name)  # same file system: no copy
                except OSError:
                    shutil.copyfile(final.path / name, tmp / name)
            torch.save(saved, tmp / _OPTIMIZER)
            _write_manifest(tmp)
    for old in found[:-1]:
        shutil.rmtree(old.path, ignore_errors=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_manifest(folder: Path) -> None:
    sums = {name: _sha256(folder / name) for name in (_WEIGHTS, _OPTIMIZER, _STATE)}
    (folder / _MANIFEST).write_text(json.dumps(sums, indent=2, sort_keys=True), encoding="utf-8")


def checkpoint_problem(checkpoint: Checkpoint) -> str | None:
    """Why ``checkpoint`` cannot be trusted (truncated, altered, unreadable), or None when it is sound.

    With a manifest every file's SHA-256 must match; a checkpoint written before
    manifests existed must at least read back completely.
    """
    path = checkpoint.path
    manifest = path / _MANIFEST
    try:
        if manifest.is_file():
            sums = json.loads(manifest.read_text(encoding="utf-8"))
            for name in (_WEIGHTS, _OPTIMIZER, _STATE):
                if sums.get(name) != _sha256(path / name):
                    return f"{name} does not match its checksum (truncated or altered)"
            return None
        load_file(str(path / _WEIGHTS))
        torch.load(path / _OPTIMIZER, map_location="cpu", weights_only=True)
        json.loads((path / _STATE).read_text(encoding="utf-8"))
    except Exception as exc:  # any reader's failure means the same thing here: unusable
        return f"it cannot be read ({type(exc).__name__}: {exc})"
    return None


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
    *,
    fallback: bool = True,
) -> dict[str, Any]:
    """Restore trainable weights, optimizer, scheduler and RNG; return the loop state.

    ``checkpoint`` is checked before anything is restored. When it is damaged and
    ``fallback`` is on, the newest older sound checkpoint of the same run is used
    instead, with a warning (the returned state says which step); when there is
    none, :class:`TrainingError` says what to do.
    """
    problem = checkpoint_problem(checkpoint)
    if problem is not None:
        older = [c for c in list_checkpoints(checkpoint.path.parent.parent) if c.step < checkpoint.step]
        if not fallback or not older:
            raise TrainingError(
                f"cannot resume from checkpoint {checkpoint.path}: {problem}, and no older checkpoint of "
                "this run is kept; start a new run directory (keep_checkpoints=2 or more keeps a spare)"
            )
        log.warning(
            "checkpoint %s is damaged (%s); resuming from %s", checkpoint.path, problem, older[-1].path
        )
        return load_checkpoint(older[-1], model, optimizer, scheduler, fallback=fallback)
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
