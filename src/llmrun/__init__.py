"""llmrun: run large language models behind one typed interface.

``import llmrun`` is light: backends (torch, transformers, lamini) load only
when a runner of theirs is built. Every name of Lamini's 2023 ``llama``
package is here too (see :mod:`llmrun.compat`), loaded on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmrun.__about__ import __version__
from llmrun.errors import LLMRunError
from llmrun.generation import GenerationConfig
from llmrun.schema import Context, Type

if TYPE_CHECKING:
    from llmrun.compat import (
        LLM,
        AutocompleteRunner,
        BasicModelRunner,
        BinaryLaminiClassifier,
        CompareEqualMetric,
        DefaultChunker,
        DirectoryLoader,
        DocsToQA,
        InputOutputRunner,
        Lamini,
        LaminiClassifier,
        LaminiIndex,
        LlamaV2Runner,
        LLMEngine,
        MistralRunner,
        QueryEngine,
        QuestionAnswerModel,
        RetrievalAugmentedRunner,
        error,
        finetune_qa,
        run_model,
        run_prompt_engineer_answers,
        run_prompt_engineer_questions,
        setup_config,
    )
    from llmrun.fallback import FallbackRunner
    from llmrun.registry import available_backends, load, register_backend
    from llmrun.runner import Capabilities, Completion, CompletionRequest, ModelRunner, RunResult, Usage
    from llmrun.training import EvalResult, TrainOptions, TrainResult

__all__ = [
    "LLM",
    "AutocompleteRunner",
    "BasicModelRunner",
    "BinaryLaminiClassifier",
    "Capabilities",
    "CompareEqualMetric",
    "Completion",
    "CompletionRequest",
    "Context",
    "DefaultChunker",
    "DirectoryLoader",
    "DocsToQA",
    "EvalResult",
    "FallbackRunner",
    "GenerationConfig",
    "InputOutputRunner",
    "LLMEngine",
    "LLMRunError",
    "Lamini",
    "LaminiClassifier",
    "LaminiIndex",
    "LlamaV2Runner",
    "MistralRunner",
    "ModelRunner",
    "QueryEngine",
    "QuestionAnswerModel",
    "RetrievalAugmentedRunner",
    "RunResult",
    "TrainOptions",
    "TrainResult",
    "Type",
    "Usage",
    "__version__",
    "available_backends",
    "error",
    "finetune_qa",
    "load",
    "register_backend",
    "run_model",
    "run_prompt_engineer_answers",
    "run_prompt_engineer_questions",
    "setup_config",
]

_LAZY = {
    "FallbackRunner": "llmrun.fallback",
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
    import importlib

    module = _LAZY.get(name)
    if module is None:
        compat = importlib.import_module("llmrun.compat")
        if name != "error" and name not in compat.EXPORTS:
            raise AttributeError(f"module 'llmrun' has no attribute {name!r}")
        return getattr(compat, name)
    return getattr(importlib.import_module(module), name)
