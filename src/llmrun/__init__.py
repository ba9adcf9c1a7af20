"""llmrun: run large language models behind one typed interface.

``import llmrun`` is light: backends (torch, transformers, lamini) load only
when a runner of theirs is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmrun.__about__ import __version__
from llmrun.errors import LLMRunError
from llmrun.generation import GenerationConfig
from llmrun.schema import Context, Type

if TYPE_CHECKING:
    from llmrun.engines import BasicModelRunner, LLMEngine
    from llmrun.registry import available_backends, load, register_backend
    from llmrun.runner import Capabilities, Completion, CompletionRequest, ModelRunner, RunResult, Usage
    from llmrun.training import EvalResult, TrainOptions, TrainResult

__all__ = [
    "BasicModelRunner",
    "Capabilities",
    "Completion",
    "CompletionRequest",
    "Context",
    "EvalResult",
    "GenerationConfig",
    "LLMEngine",
    "LLMRunError",
    "ModelRunner",
    "RunResult",
    "TrainOptions",
    "TrainResult",
    "Type",
    "Usage",
    "__version__",
    "available_backends",
    "load",
    "register_backend",
]

_LAZY = {
    "BasicModelRunner": "llmrun.engines",
    "LLMEngine": "llmrun.engines",
    "load": "llmrun.registry",
    "available_backends": "llmrun.registry",
    "register_backend": "llmrun.registry",
    "ModelRunner": "llmrun.runner",
    "CompletionRequest": "llmrun.runner",
    "Completion": "llmrun.runner",
    "Capabilities": "llmrun.runner",
    "RunResult": "llmrun.runner",
    "Usage": "llmrun.runner",
    "EvalResult": "llmrun.training",
    "TrainOptions": "llmrun.training",
    "TrainResult": "llmrun.training",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'llmrun' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
