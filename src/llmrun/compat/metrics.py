"""2023's ``CompareEqualMetric``: ask a model how similar two strings are."""

from __future__ import annotations

from typing import Any

from llmrun.errors import InvalidInputError
from llmrun.schema import Context, Type


class Match(Type):
    """The two strings to compare."""

    a: str = Context("the first string")
    b: str = Context("the second string")


class MatchResult(Type):
    """How similar they are."""

    similarity: float = Context(
        "a number between 0.0 and 1.0 describing similarity of the input strings.  "
        "0.0 is no similarity, and 1.0 is a perfect match.",
        ge=0.0,
        le=1.0,
    )


class CompareEqualMetric:
    """``CompareEqualMetric(a, b)``: ``.input`` is a :class:`Match`; the output is a :class:`MatchResult`.

    :meth:`score` asks a runner (any llmrun runner or 2023 facade) for the
    similarity; ``exact`` says whether the two strings are equal once stripped.
    """

    def __init__(self, a: str, b: str) -> None:
        if not isinstance(a, str) or not isinstance(b, str):
            raise InvalidInputError("CompareEqualMetric compares two strings")
        self.input = Match(a=a, b=b)

    def get_metric_type(self) -> type[MatchResult]:
        """The output type of the metric."""
        return MatchResult

    @property
    def exact(self) -> bool:
        """True when the strings are equal after stripping whitespace."""
        return self.input.a.strip() == self.input.b.strip()

    def score(self, runner: Any, **options: Any) -> float:
        """The similarity ``runner`` gives the two strings (1.0 without a call when they are equal)."""
        if self.exact:
            return 1.0
        result: MatchResult = runner.generate(self.input, MatchResult, **options)
        return result.similarity
