"""The local backend: Hugging Face transformers + torch on this machine's CPU or GPU.

``LocalRunner`` (a thin adapter) and ``LocalEngine`` (the one owner of local
generation, which evaluation, benchmarks and servers share) are imported on first
use, so importing one of this package's modules (say, the grammar) does not load
the whole backend.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmrun.errors import DependencyError

try:
    import torch  # noqa: F401
    import transformers  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the install
    raise DependencyError(
        f"the local backend needs torch and transformers ({exc.name} is missing); "
        'install them with: pip install "llmrun[local]"'
    ) from exc

if TYPE_CHECKING:
    from llmrun.backends.local.engine import LocalEngine
    from llmrun.backends.local.runner import LocalRunner

__all__ = ["LocalEngine", "LocalRunner"]


def __getattr__(name: str) -> Any:
    if name == "LocalRunner":
        from llmrun.backends.local.runner import LocalRunner

        return LocalRunner
    if name == "LocalEngine":
        from llmrun.backends.local.engine import LocalEngine

        return LocalEngine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
