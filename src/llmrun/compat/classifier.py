"""2023's ``LaminiClassifier`` and ``BinaryLaminiClassifier``: not available in llmrun yet.

Both names import, so 2023 programs get a clear error where they build one,
naming what to use instead, rather than an ImportError at the top.
"""

from __future__ import annotations

from typing import Any

from llmrun.errors import UnsupportedFeatureError

_HELP = (
    "{name} is not available in llmrun yet: 2023's classifier generated examples with a chat model "
    "and fitted a scikit-learn model on Lamini's embeddings. Classify with a typed call instead, e.g. "
    "LLMEngine(...)(text, output_type=Label) with `class Label(Type): label: Literal['a', 'b'] = "
    "Context('the class')`, or embed with LaminiIndex and search with faiss"
)


class LaminiClassifier:
    """Not available yet; building one raises :class:`~llmrun.errors.UnsupportedFeatureError`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise UnsupportedFeatureError(_HELP.format(name=type(self).__name__))


class BinaryLaminiClassifier(LaminiClassifier):
    """Not available yet; building one raises :class:`~llmrun.errors.UnsupportedFeatureError`."""
