"""Loading a causal LM and its tokenizer: device, dtype, folder or hub cache, safe defaults.

Safe by default: weights load from safetensors only (``allow_pickle=True``
permits ``.bin`` checkpoints) and ``trust_remote_code`` is off unless asked.
Offline (``HF_HUB_OFFLINE=1``) a hub id loads from the local cache or fails
with a message saying how to get it there.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from llmrun.backends.local.threads import apply_threads, check_threads
from llmrun.errors import ConfigurationError, DeviceError, ModelLoadError, ModelNotFoundError
from llmrun.training import resolve_model_dir

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}
_WEIGHT_FILES_SAFE = ("model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors")
_WEIGHT_FILES_PICKLE = ("pytorch_model.bin", "pytorch_model.bin.index.json", "adapter_model.bin")
#: Device types llmrun runs on; others (``meta``, ``xla``, ...) hold no usable weights here.
_DEVICE_TYPES = ("cpu", "cuda", "mps")
#: A hub id: ``name`` or ``owner/name`` of letters, digits, ``-``, ``_`` and ``.``, as the hub allows.
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?$")


@dataclass(frozen=True)
class LoadSettings:
    """How to load a model; see :class:`~llmrun.backends.local.LocalRunner` for meanings."""

    device: str = "auto"
    dtype: str = "auto"
    trust_remote_code: bool = False
    allow_pickle: bool = False
    revision: str | None = None
    cache_dir: str | None = None
    threads: int | None = None
    offline: bool = False

    def __post_init__(self) -> None:
        for name in ("trust_remote_code", "allow_pickle", "offline"):
            value = getattr(self, name)
            if not isinstance(value, bool):  # a string such as "no" must never count as True
                raise ConfigurationError(
                    f"option {name}={value!r} is invalid: it must be True or False, not "
                    f"{type(value).__name__}; pass {name}=True or {name}=False"
                )
        check_threads(self.threads)


def resolve_device(device: str) -> torch.device:
    """``auto`` is CUDA when present, else CPU; an explicit device must exist."""
    if not isinstance(device, str) or not device:
        raise ConfigurationError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ConfigurationError(
            f"device {device!r} is not a device name; use 'auto', 'cpu', 'cuda' or 'cuda:N'"
        ) from None
    if resolved.type not in _DEVICE_TYPES:
        raise ConfigurationError(
            f"device {device!r} is not supported by the local backend; use 'auto', 'cpu', 'cuda', "
            "'cuda:N' or 'mps'"
        )
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device {device!r} was asked for but CUDA is not available on this machine "
                "(no GPU, or a CPU-only torch build); use device='cpu' or device='auto'"
            )
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise DeviceError(
                f"device {device!r} does not exist: this machine has "
                f"{torch.cuda.device_count()} CUDA device(s)"
            )
    elif resolved.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(f"device {device!r} was asked for but MPS is not available; use 'cpu'")
    return resolved


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """``auto`` is float32 on CPU and bfloat16 (else float16) on CUDA."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if not isinstance(dtype, str) or dtype not in _DTYPES:
        raise ConfigurationError(
            f"dtype {dtype!r} is not supported; use 'auto', 'float32', 'bfloat16' or 'float16'"
        )
    return _DTYPES[dtype]


def locate_model(name: str, settings: LoadSettings) -> Path | str:
    """A local folder as a ``Path`` (checked), or the hub id when it is not a folder.

    Offline, the hub id must already be in the cache.
    """
    if "\x00" in name:
        raise ModelNotFoundError(f"model name {name!r} contains a NUL character; check how it was built")
    path = Path(name).expanduser()
    if path.is_dir():
        path = resolve_model_dir(path)
        _check_folder(path, settings.allow_pickle)
        return path
    if path.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ModelNotFoundError(
            f"model {name!r} is not a folder with a checkpoint, nor a hub id like 'EleutherAI/pythia-70m'"
        )
    if not _HUB_ID.match(name):
        raise ModelNotFoundError(
            f"model {name!r} is neither an existing folder nor a hub id: a hub id looks like "
            "'EleutherAI/pythia-70m' (letters, digits, '-', '_' and '.', no spaces); for a folder, "
            "check the path"
        )
    if is_offline(settings) and not _in_cache(name, settings):
        raise ModelNotFoundError(
            f"model {name!r} is not in the Hugging Face cache ({cache_dir(settings)}) and offline mode "
            f"(HF_HUB_OFFLINE=1 or offline=True) forbids downloading it; download it once online "
            f"(`hf download {name}`), point HF_HUB_CACHE (or cache_dir) at a cache that has it, or pass the "
            "path of a local checkpoint folder"
        )
    if not settings.allow_pickle and _in_cache(name, settings):
        _check_cached_weights(name, settings)
    return name


def _check_cached_weights(repo_id: str, settings: LoadSettings) -> None:
    """A cached hub model with only pickle weights needs ``allow_pickle``: say so before loading."""
    from huggingface_hub import try_to_load_from_cache

    def cached(filename: str) -> bool:
        found = try_to_load_from_cache(
            repo_id, filename, cache_dir=cache_dir(settings), revision=settings.revision
        )
        return isinstance(found, str)

    if any(cached(f) for f in _WEIGHT_FILES_SAFE):
        return
    pickled = [f for f in _WEIGHT_FILES_PICKLE if cached(f)]
    if pickled:
        raise ModelLoadError(
            f"the cached model {repo_id!r} has only pickle weights ({', '.join(pickled)}), which can run "
            "arbitrary code when loaded; pass allow_pickle=True (LLMRUN_ALLOW_PICKLE=1, or "
            "allow_pickle = true in llmrun.toml) if you trust the source, or use a safetensors revision"
        )


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' own progress bars ("Loading weights", "Writing model shards") and the
    FutureWarnings transformers and peft raise about each other; hub download bars stay."""
    from transformers.utils import logging as hf_logging

    active = getattr(hf_logging, "_tqdm_active", None)
    if active is not None:
        hf_logging._tqdm_active = False
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|peft)\b")
            yield
    finally:
        if active is not None:
            hf_logging._tqdm_active = active


def is_offline(settings: LoadSettings | None = None) -> bool:
    """Whether the hub may not be contacted: ``offline=True``, or ``HF_HUB_OFFLINE`` (read at call time)."""
    if settings is not None and settings.offline:
        return True
    flag = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return flag.strip().lower() in ("1", "true", "yes", "on")


def cache_dir(settings: LoadSettings) -> Path:
    """The hub cache in force: the option, ``HF_HUB_CACHE``, or ``$HF_HOME/hub``."""
    if settings.cache_dir:
        return Path(settings.cache_dir).expanduser()
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
    return Path(home).expanduser() / "hub"


def _in_cache(repo_id: str, settings: LoadSettings) -> bool:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(
        repo_id, "config.json", cache_dir=cache_dir(settings), revision=settings.revision
    )
    return isinstance(found, str)


def _check_folder(path: Path, allow_pickle: bool) -> None:
    if not (path / "config.json").is_file() and not (path / "adapter_config.json").is_file():
        raise ModelLoadError(
            f"folder {path} has no config.json; point to a folder saved with save_pretrained() "
            "(config.json plus model.safetensors)"
        )
    safe = [f for f in _WEIGHT_FILES_SAFE if (path / f).is_file()]
    pickled = [f for f in _WEIGHT_FILES_PICKLE if (path / f).is_file()]
    if safe:
        return
    if pickled and not allow_pickle:
        raise ModelLoadError(
            f"folder {path} has only pickle weights ({', '.join(pickled)}), which can run arbitrary code "
            "when loaded; convert them to safetensors, or pass allow_pickle=True if you trust the source"
        )
    if not pickled:
        raise ModelLoadError(
            f"folder {path} has no model weights (expected model.safetensors); "
            "save the model with save_pretrained() into it"
        )


def load_model_and_tokenizer(name: str, settings: LoadSettings) -> tuple[Any, Any, torch.device]:
    """Load the model (eval mode, on its device and dtype) and a left-padding tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = resolve_device(settings.device)
    dtype = resolve_dtype(settings.dtype, device)
    location = locate_model(name, settings)
    apply_threads(settings.threads)
    common: dict[str, Any] = {
        "trust_remote_code": settings.trust_remote_code,
        "revision": settings.revision,
        "cache_dir": str(cache_dir(settings)),
        "local_files_only": is_offline(settings),
    }
    adapter = isinstance(location, Path) and (location / "adapter_config.json").is_file()
    base = _adapter_base(Path(location)) if adapter else location
    try:
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(str(location if adapter else base), **common)
            model: Any = AutoModelForCausalLM.from_pretrained(
                str(base),
                dtype=dtype,
                use_safetensors=None if settings.allow_pickle else True,
                # transformers does not pass these on to its adapter lookup, which then tries the hub
                adapter_kwargs={k: common[k] for k in ("cache_dir", "local_files_only")},
                **common,
            )
            if adapter:
                from peft import PeftModel

                model = PeftModel.from_pretrained(model, str(location)).merge_and_unload()
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"could not load model {name!r}: {exc}") from exc
    model.to(device)
    model.eval()
    model.requires_grad_(False)  # inference: training turns on what it trains
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer, device


def _adapter_base(folder: Path) -> str:
    config = json.loads((folder / "adapter_config.json").read_text())
    base = config.get("base_model_name_or_path")
    if not base:
        raise ModelLoadError(f"LoRA adapter {folder} does not name its base model (base_model_name_or_path)")
    return str(base)
