"""LoRA adapters through ``peft``: sane defaults per architecture, saving and reloading.

``add_lora`` injects the adapter layers into the model in place, so the model
object itself trains (and answers) with them; ``load_adapter`` is what a loader
calls on a base model to apply a saved adapter folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llmrun.errors import DependencyError, ModelLoadError, TrainingError
from llmrun.training import TrainOptions

ADAPTER_CONFIG = "adapter_config.json"

#: Modules that get adapters when ``lora_target_modules`` is not given.
DEFAULT_TARGET_MODULES: dict[str, tuple[str, ...]] = {
    "gpt_neox": ("query_key_value",),
    "llama": ("q_proj", "v_proj"),
    "mistral": ("q_proj", "v_proj"),
    "mixtral": ("q_proj", "v_proj"),
    "qwen2": ("q_proj", "v_proj"),
    "qwen3": ("q_proj", "v_proj"),
    "gemma": ("q_proj", "v_proj"),
    "gemma2": ("q_proj", "v_proj"),
    "phi": ("q_proj", "v_proj"),
    "phi3": ("qkv_proj",),
    "opt": ("q_proj", "v_proj"),
    "gptj": ("q_proj", "v_proj"),
    "gpt2": ("c_attn",),
    "falcon": ("query_key_value",),
    "bloom": ("query_key_value",),
    "mpt": ("Wqkv",),
    "stablelm": ("q_proj", "v_proj"),
    "olmo": ("q_proj", "v_proj"),
    "olmo2": ("q_proj", "v_proj"),
}


def _peft() -> Any:
    try:
        import peft
    except ImportError as exc:  # pragma: no cover - peft is part of the local extra
        raise DependencyError(
            'LoRA fine-tuning needs peft; install it with: pip install "llmrun[local]"'
        ) from exc
    return peft


def target_modules(model: Any, options: TrainOptions) -> list[str]:
    """The module names that get adapters: the option, else the architecture's default."""
    if options.lora_target_modules is not None:
        return list(options.lora_target_modules)
    model_type = getattr(model.config, "model_type", "")
    if model_type in DEFAULT_TARGET_MODULES:
        return list(DEFAULT_TARGET_MODULES[model_type])
    mapping = _peft().utils.constants.TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
    if model_type in mapping:
        return list(mapping[model_type])
    raise TrainingError(
        f"no default LoRA target modules for model type {model_type!r}; pass lora_target_modules=[...] "
        "naming the attention projection layers (e.g. ['q_proj', 'v_proj'])"
    )


def add_lora(model: Any, options: TrainOptions) -> Any:
    """Inject LoRA adapters into ``model`` (in place) and return the wrapping ``PeftModel``.

    Only the adapter weights are left trainable.
    """
    peft = _peft()
    targets = target_modules(model, options)
    config = peft.LoraConfig(
        r=options.lora_r,
        lora_alpha=options.lora_alpha,
        lora_dropout=options.lora_dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
    )
    try:
        return peft.get_peft_model(model, config)
    except ValueError as exc:
        raise TrainingError(
            f"cannot add LoRA adapters to modules {targets} of this {type(model).__name__}: {exc}; "
            "pass lora_target_modules=[...] with names of its linear layers"
        ) from exc


def save_adapter(peft_model: Any, dest: Path, base_model: str) -> None:
    """Save the adapter (safetensors + config) into ``dest``, pointing at ``base_model``."""
    for config in peft_model.peft_config.values():
        config.base_model_name_or_path = base_model
    peft_model.save_pretrained(str(dest), safe_serialization=True)


def merge_into_base(peft_model: Any) -> Any:
    """Fold the adapter into the base weights, in place; returns the plain base model."""
    return peft_model.merge_and_unload()


def remove_adapters(peft_model: Any) -> Any:
    """Take the adapter layers out again without merging them; returns the base model as it was."""
    return peft_model.unload()


def is_adapter_dir(path: str | Path) -> bool:
    """Whether ``path`` is a saved LoRA adapter folder."""
    return (Path(path) / ADAPTER_CONFIG).is_file()


def adapter_base_model(path: str | Path) -> str:
    """The base model an adapter folder was trained on (a hub name or a folder)."""
    config_path = Path(path) / ADAPTER_CONFIG
    try:
        base = json.loads(config_path.read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (OSError, ValueError, AttributeError) as exc:
        raise ModelLoadError(f"cannot read the adapter config {config_path}: {exc}") from exc
    if not isinstance(base, str) or not base:
        raise ModelLoadError(
            f"{config_path} does not name its base model (base_model_name_or_path); "
            "set it to the model the adapter was trained on"
        )
    return base


def load_adapter(model: Any, path: str | Path, *, merge: bool = True) -> Any:
    """Apply the adapter saved in ``path`` to the base ``model``.

    With ``merge`` (the default) the adapter is folded into the weights and the
    plain model is returned, which generates as fast as the base model.
    """
    peft = _peft()
    try:
        wrapped = peft.PeftModel.from_pretrained(model, str(path))
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelLoadError(f"cannot load the LoRA adapter in {path}: {exc}") from exc
    return wrapped.merge_and_unload() if merge else wrapped
