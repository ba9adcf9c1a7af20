"""The OpenAI backend: any OpenAI-wire server (OpenAI, vLLM, SGLang, llama.cpp, Ollama, Lamini's /inf,
``llmrun serve``) through the official ``openai`` client.

Install with ``pip install -e ".[openai]" in an llmrun checkout``. See :class:`OpenAIRunner` and
:mod:`llmrun.backends.openai.profiles`.
"""

from __future__ import annotations

from llmrun.errors import DependencyError

try:
    import openai  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the install
    raise DependencyError(
        f"the openai backend needs the openai client ({exc.name} is missing); "
        'install it with: pip install -e ".[openai]" in an llmrun checkout'
    ) from exc

from llmrun.backends.openai.runner import OpenAIRunner

__all__ = ["OpenAIRunner"]
