"""The local backend: Hugging Face transformers + torch on this machine's CPU or GPU."""

from __future__ import annotations

from llmrun.errors import DependencyError

try:
    import torch  # noqa: F401
    import transformers  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the install
    raise DependencyError(
        f"the local backend needs torch and transformers ({exc.name} is missing); "
        'install them with: pip install "llmrun[local]"'
    ) from exc

from llmrun.backends.local.runner import LocalRunner

__all__ = ["LocalRunner"]
