"""Where ``BasicModelRunner`` and ``LLMEngine`` used to live; they are in :mod:`llmrun.compat.engines` now."""

from __future__ import annotations

from llmrun.compat.engines import LLM, BasicModelRunner, Lamini, LLMEngine

__all__ = ["LLM", "BasicModelRunner", "LLMEngine", "Lamini"]
