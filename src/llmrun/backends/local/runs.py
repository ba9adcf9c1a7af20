"""Run directories of local training (names, finding the one to resume) and the model snapshot
that makes a training call all-or-nothing."""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from llmrun.training import RUN_METADATA_FILE

#: Set on a model object whose weights include a merged LoRA adapter (the adapter folder).
MERGED_ADAPTER_ATTR = "_llmrun_merged_adapter"

_STAMP = r"\d{8}-\d{6}(?:-(\d+))?"


def run_stem(model_name: str) -> str:
    """The name runs of ``model_name`` share: its base model's, also for a model a run saved."""
    meta = Path(model_name) / RUN_METADATA_FILE
    if meta.is_file():
        try:
            base = json.loads(meta.read_text(encoding="utf-8")).get("base_model")
        except (OSError, ValueError, AttributeError):
            base = None
        if isinstance(base, str) and base:
            model_name = base
    name = Path(model_name).name or model_name
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "model"


def new_run_dir(root: str | Path, stem: str) -> Path:
    """A fresh, not yet existing run directory ``<stem>-<UTC time>`` under ``root``."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{stem}-{stamp}"
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


def latest_run_dir(root: str | Path, stem: str) -> Path | None:
    """The newest run directory named ``<stem>-<time>`` under ``root``, or None."""
    pattern = re.compile(rf"{re.escape(stem)}-({_STAMP})")
    found: list[tuple[str, int, Path]] = []
    if Path(root).is_dir():
        for entry in Path(root).iterdir():
            match = pattern.fullmatch(entry.name)
            if match and entry.is_dir():
                stamp = match.group(1)[:15]
                found.append((stamp, int(match.group(2) or 1), entry))
    return max(found)[2] if found else None


@dataclass
class ModelSnapshot:
    """What training may change on a model object, kept to put back when a run fails.

    ``weights`` are CPU copies of the parameters a run can change (all of them for full
    fine-tuning; for LoRA only those of the adapted modules, which merging changes).
    """

    weights: dict[str, torch.Tensor]
    training: bool
    name_or_path: Any
    config_name: Any
    merged_adapter: Any
    use_cache: Any

    @classmethod
    def take(cls, model: Any, modules: Collection[str] | None = None) -> ModelSnapshot:
        """Snapshot ``model``; ``modules``: only parameters of modules with these (suffix) names."""
        params = dict(model.named_parameters())
        chosen = [n for n in params if modules is None or _in_modules(n, modules)] or list(params)
        return cls(
            weights={n: params[n].detach().to("cpu", copy=True) for n in chosen},
            training=model.training,
            name_or_path=getattr(model, "name_or_path", None),
            config_name=getattr(model.config, "_name_or_path", None),
            merged_adapter=getattr(model, MERGED_ADAPTER_ATTR, None),
            use_cache=getattr(model.config, "use_cache", None),
        )

    def restore(self, model: Any) -> None:
        """Put the snapshot back into ``model`` (whose adapter layers, if any, are already removed);
        ``requires_grad`` ends off everywhere."""
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, saved in self.weights.items():
                params[name].copy_(saved.to(params[name].device, params[name].dtype))
        for p in params.values():
            p.requires_grad_(False)  # a model that answers needs no gradients, as after a run
        model.train(self.training)
        if self.name_or_path is not None:
            model.name_or_path = self.name_or_path
        if self.config_name is not None:
            model.config._name_or_path = self.config_name
        if self.merged_adapter is None:
            if hasattr(model, MERGED_ADAPTER_ATTR):
                delattr(model, MERGED_ADAPTER_ATTR)
        else:
            setattr(model, MERGED_ADAPTER_ATTR, self.merged_adapter)
        if self.use_cache is not None:
            model.config.use_cache = self.use_cache


def _in_modules(param: str, modules: Collection[str]) -> bool:
    module = param.rsplit(".", 1)[0]
    return any(module == m or module.endswith("." + m) for m in modules)
