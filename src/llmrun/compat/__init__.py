"""The 2023 ``llama`` surface, as thin layers over llmrun's runners.

Every name Lamini's ``llama`` package (v1.0.3) exported, plus mid-2023's
``LLM``, importable from here or from ``llmrun``. Importing this package is
light: each name loads its module on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llmrun.compat import error
    from llmrun.compat.classifier import BinaryLaminiClassifier, LaminiClassifier
    from llmrun.compat.docs_to_qa import (
        DocsToQA,
        finetune_qa,
        run_model,
        run_prompt_engineer_answers,
        run_prompt_engineer_questions,
    )
    from llmrun.compat.engines import LLM, BasicModelRunner, Lamini, LLMEngine
    from llmrun.compat.metrics import CompareEqualMetric
    from llmrun.compat.retrieval import (
        DefaultChunker,
        DirectoryLoader,
        LaminiIndex,
        QueryEngine,
        RetrievalAugmentedRunner,
    )
    from llmrun.compat.runners import (
        AutocompleteRunner,
        InputOutputRunner,
        LlamaV2Runner,
        MistralRunner,
        QuestionAnswerModel,
    )
    from llmrun.compat.setup import setup_config

#: Every public name of this package and the module that defines it.
EXPORTS: dict[str, str] = {
    "BasicModelRunner": "llmrun.compat.engines",
    "LLMEngine": "llmrun.compat.engines",
    "LLM": "llmrun.compat.engines",
    "Lamini": "llmrun.compat.engines",
    "InputOutputRunner": "llmrun.compat.runners",
    "QuestionAnswerModel": "llmrun.compat.runners",
    "AutocompleteRunner": "llmrun.compat.runners",
    "LlamaV2Runner": "llmrun.compat.runners",
    "MistralRunner": "llmrun.compat.runners",
    "LaminiClassifier": "llmrun.compat.classifier",
    "BinaryLaminiClassifier": "llmrun.compat.classifier",
    "DirectoryLoader": "llmrun.compat.retrieval",
    "DefaultChunker": "llmrun.compat.retrieval",
    "LaminiIndex": "llmrun.compat.retrieval",
    "QueryEngine": "llmrun.compat.retrieval",
    "RetrievalAugmentedRunner": "llmrun.compat.retrieval",
    "DocsToQA": "llmrun.compat.docs_to_qa",
    "run_prompt_engineer_questions": "llmrun.compat.docs_to_qa",
    "run_prompt_engineer_answers": "llmrun.compat.docs_to_qa",
    "finetune_qa": "llmrun.compat.docs_to_qa",
    "run_model": "llmrun.compat.docs_to_qa",
    "CompareEqualMetric": "llmrun.compat.metrics",
    "setup_config": "llmrun.compat.setup",
}

__all__ = [
    "LLM",
    "AutocompleteRunner",
    "BasicModelRunner",
    "BinaryLaminiClassifier",
    "CompareEqualMetric",
    "DefaultChunker",
    "DirectoryLoader",
    "DocsToQA",
    "InputOutputRunner",
    "LLMEngine",
    "Lamini",
    "LaminiClassifier",
    "LaminiIndex",
    "LlamaV2Runner",
    "MistralRunner",
    "QueryEngine",
    "QuestionAnswerModel",
    "RetrievalAugmentedRunner",
    "error",
    "finetune_qa",
    "run_model",
    "run_prompt_engineer_answers",
    "run_prompt_engineer_questions",
    "setup_config",
]


def __getattr__(name: str) -> Any:
    if name == "error":
        return importlib.import_module("llmrun.compat.error")
    module = EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'llmrun.compat' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
