"""The Hugging Face hub cache layout: a checkpoint folder installed exactly as ``huggingface_hub``
caches a hub repo, so ``from_pretrained("org/name")`` finds it offline (:func:`install_in_hf_cache`),
and :func:`use_hf_cache` to point this process at such a cache.

``huggingface_hub`` reads ``HF_HUB_OFFLINE`` and ``HF_HUB_CACHE`` (else ``HF_HOME``/hub) once, at
import, into ``huggingface_hub.constants``; transformers reads those constants at call time, so
setting the env vars after ``huggingface_hub`` is imported has no effect in that process;
:func:`use_hf_cache` (or the ``offline_hf_cache`` pytest fixture) sets both.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from llmrun.errors import InvalidInputError

if TYPE_CHECKING:
    pass

__all__ = ["checkpoint_commit_hash", "install_in_hf_cache", "use_hf_cache"]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _checkpoint_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


def checkpoint_commit_hash(folder: Path | str) -> str:
    """A 40-hex "commit" id for a checkpoint folder, derived from its file names and contents."""
    folder = Path(folder)
    digest = hashlib.sha1(usedforsecurity=False)
    for path in _checkpoint_files(folder):
        digest.update(f"{path.relative_to(folder).as_posix()}\0{_sha256(path)}\n".encode())
    return digest.hexdigest()


def _repo_folder_name(repo_id: str) -> str:
    parts = repo_id.split("/")
    if not repo_id or len(parts) > 2 or any(not p or p in {".", ".."} or "--" in p for p in parts):
        raise InvalidInputError(
            f"invalid hub repo id {repo_id!r}; use 'org/name' (e.g. 'EleutherAI/pythia-70m') or 'name'."
        )
    return "models--" + "--".join(parts)


def install_in_hf_cache(
    folder: Path | str, repo_id: str, cache_dir: Path | str, revision: str = "main"
) -> Path:
    """Lay ``folder`` out in ``cache_dir`` exactly as ``huggingface_hub`` caches the model repo ``repo_id``.

    Files go to ``models--org--name/blobs/<sha256>``; ``snapshots/<commit>/<file>`` are relative
    symlinks to them (copies where symlinks are unavailable); ``refs/<revision>`` holds the commit.
    Re-installing identical files is a no-op. Returns the snapshot folder. Load it offline with
    :func:`use_hf_cache` (or ``HF_HUB_OFFLINE=1 HF_HUB_CACHE=cache_dir`` set before the process starts).
    """
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise InvalidInputError(f"{folder} is not a checkpoint folder (no config.json); build one first.")
    if any(part in {"", ".", ".."} for part in revision.split("/")):
        raise InvalidInputError(f"invalid revision {revision!r}; use a branch name such as 'main'.")
    repo_dir = Path(cache_dir) / _repo_folder_name(repo_id)
    commit = checkpoint_commit_hash(folder)
    snapshot = repo_dir / "snapshots" / commit
    for blobs in (repo_dir / "blobs", snapshot):
        blobs.mkdir(parents=True, exist_ok=True)

    for path in _checkpoint_files(folder):
        relative = path.relative_to(folder)
        blob = repo_dir / "blobs" / _sha256(path)
        if not blob.exists():
            partial = blob.with_name(blob.name + ".incomplete")
            shutil.copyfile(path, partial)
            partial.replace(blob)
        link = snapshot / relative
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        try:
            link.symlink_to(os.path.relpath(blob, link.parent))
        except OSError:  # no symlink support (e.g. Windows without developer mode): copy, as the hub does
            shutil.copyfile(blob, link)

    ref = repo_dir / "refs" / revision
    ref.parent.mkdir(parents=True, exist_ok=True)
    ref.write_text(commit)  # the hub writes the bare hash, no newline
    return snapshot


@contextlib.contextmanager
def use_hf_cache(cache_dir: Path | str, *, offline: bool = True) -> Iterator[Path]:
    """Point this process (and child processes) at ``cache_dir``, offline by default; restore on exit.

    Sets ``HF_HUB_CACHE`` and ``HF_HUB_OFFLINE`` in ``os.environ`` and in ``huggingface_hub.constants``
    (read once at import, then used by transformers at call time). Not thread-safe: it changes
    process-wide state.
    """
    import huggingface_hub.constants as hf_constants

    cache = Path(cache_dir)
    saved_env = {k: os.environ.get(k) for k in ("HF_HUB_CACHE", "HF_HUB_OFFLINE")}
    saved_const = (hf_constants.HF_HUB_CACHE, hf_constants.HF_HUB_OFFLINE)
    os.environ["HF_HUB_CACHE"] = str(cache)
    os.environ["HF_HUB_OFFLINE"] = "1" if offline else "0"
    hf_constants.HF_HUB_CACHE = str(cache)
    hf_constants.HF_HUB_OFFLINE = offline
    try:
        yield cache
    finally:
        hf_constants.HF_HUB_CACHE, hf_constants.HF_HUB_OFFLINE = saved_const
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
