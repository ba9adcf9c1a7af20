"""The local backend: Hugging Face transformers + torch on this machine's CPU or GPU.

``LocalRunner`` (a thin adapter) and ``LocalEngine`` (the one owner of local
generation, which evaluation, benchmarks and servers share) are imported on first
use, so importing one of this package's modules (say, the grammar) does not load
the whole backend, and its pure-Python modules (``schema_bounds``, which the OpenAI
backend uses too) import without torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmrun.errors import DependencyError

if TYPE_CHECKING:
    from llmrun.backends.local.engine import LocalEngine
    from llmrun.backends.local.runner import LocalRunner

__all__ = ["LocalEngine", "LocalRunner"]


def __getattr__(name: str) -> Any:
    if name == "LocalRunner":
        _require_torch()
        from llmrun.backends.local.runner import LocalRunner

        return LocalRunner
    if name == "LocalEngine":
        _require_torch()
        from llmrun.backends.local.engine import LocalEngine

        return LocalEngine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _require_torch() -> None:
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise DependencyError(
            f"the local backend needs torch and transformers ({exc.name} is missing); "
            'install the local extra: pip install -e ".[local]" in an llmrun checkout (see the README)'
        ) from exc
