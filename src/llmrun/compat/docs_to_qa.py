"""2023's ``DocsToQA`` and its helpers: not available in llmrun yet.

The names import, so 2023 programs get a clear error where they use one,
naming what to use instead.
"""

from __future__ import annotations

from typing import Any, NoReturn

from llmrun.errors import UnsupportedFeatureError

_HELP = (
    "{name} is not available in llmrun yet. Generate question/answer pairs with a typed call "
    "(LLMEngine(...)(chunk, output_type=QuestionAnswer)) over DirectoryLoader(...).get_chunks(), "
    "then fine-tune with BasicModelRunner.load_data(...) and train()"
)


class DocsToQA:
    """Not available yet; building one raises :class:`~llmrun.errors.UnsupportedFeatureError`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise UnsupportedFeatureError(_HELP.format(name="DocsToQA"))


def _unavailable(name: str) -> NoReturn:
    raise UnsupportedFeatureError(_HELP.format(name=name))


def run_prompt_engineer_questions(*args: Any, **kwargs: Any) -> NoReturn:
    """Not available yet."""
    _unavailable("run_prompt_engineer_questions")


def run_prompt_engineer_answers(*args: Any, **kwargs: Any) -> NoReturn:
    """Not available yet."""
    _unavailable("run_prompt_engineer_answers")


def finetune_qa(*args: Any, **kwargs: Any) -> NoReturn:
    """Not available yet."""
    _unavailable("finetune_qa")


def run_model(*args: Any, **kwargs: Any) -> NoReturn:
    """Not available yet."""
    _unavailable("run_model")
