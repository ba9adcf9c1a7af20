"""Validation retries: ask again, with the validation error in the prompt, when typed output fails its rules.

A grammar keeps local output inside the JSON Schema, and remote backends are
checked against it; neither can express a pydantic validator (``@field_validator``,
``@model_validator``) or every cross-field rule. With ``retries=N`` (per call,
or per runner through ``GenerationConfig(retries=N)``), each prompt whose
output fails validation is sent again, up to ``N`` times, as::

    <the original prompt>

    A previous answer was rejected: <the validation error, with the raw output>
    Answer again, correcting that.

Only the failed prompts of a batch are asked again, together in one request.
When the last try still fails, :class:`~llmrun.errors.OutputValidationError`
is raised (its message says how many retries were made). Output cut off by the
token budget (:class:`~llmrun.errors.IncompleteOutputError`) is not retried:
the same budget would cut it again; raise ``max_new_tokens`` instead.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from llmrun.errors import OutputValidationError

if TYPE_CHECKING:
    from llmrun.runner import Completion, CompletionRequest, RunResult

__all__ = ["acomplete_validated", "complete_validated", "retry_prompt"]

Parse = Callable[[Sequence["Completion | str"], "CompletionRequest"], "list[RunResult[Any]]"]


def retry_prompt(prompt: str, error: OutputValidationError) -> str:
    """The prompt of a retry: the original prompt, then what was wrong with the last answer."""
    return f"{prompt}\n\nA previous answer was rejected: {error}\nAnswer again, correcting that.\n"


def complete_validated(
    complete: Callable[[CompletionRequest], list[Completion]], request: CompletionRequest, parse: Parse
) -> list[RunResult[Any]]:
    """``parse(complete(request))``, asking again for outputs that fail validation (``config.retries``)."""
    attempts = _Attempts(request, parse)
    pending: CompletionRequest | None = request
    while pending is not None:
        pending = attempts.take(complete(pending))
    return attempts.results()


async def acomplete_validated(
    acomplete: Callable[[CompletionRequest], Awaitable[list[Completion]]],
    request: CompletionRequest,
    parse: Parse,
) -> list[RunResult[Any]]:
    """Async :func:`complete_validated`."""
    attempts = _Attempts(request, parse)
    pending: CompletionRequest | None = request
    while pending is not None:
        pending = attempts.take(await acomplete(pending))
    return attempts.results()


class _Attempts:
    """The state of one call: results so far, and which prompts still need another try."""

    def __init__(self, request: CompletionRequest, parse: Parse) -> None:
        self.request = request
        self.parse = parse
        self.retries = request.config.retries if request.output is not None else 0
        self.done: dict[int, RunResult[Any]] = {}
        self.failed: dict[int, OutputValidationError] = {}
        self.pending = request
        self.asked = list(range(len(request.prompts)))  # which original prompts the pending request holds
        self.tries = 0

    def take(self, completions: list[Completion]) -> CompletionRequest | None:
        """Parse the answers to the pending request; return the next request, or None when finished."""
        if self.retries == 0:
            results = self.parse(completions, self.request)  # no retries: exactly the plain path
            self.done = dict(enumerate(results))
            return None
        asked = self.asked
        if not isinstance(completions, list | tuple) or len(completions) != len(asked):
            self.parse(completions, self.pending)  # raises the plumbing's own error about the count
        for index, completion in zip(asked, completions, strict=True):
            one = dataclasses.replace(self.request, prompts=(self.request.prompts[index],))
            try:
                self.done[index] = self.parse([completion], one)[0]
            except OutputValidationError as exc:
                self.failed[index] = exc
            else:
                self.failed.pop(index, None)
        if not self.failed or self.tries == self.retries:
            return None
        self.tries += 1
        self.asked = sorted(self.failed)
        prompts = tuple(retry_prompt(self.request.prompts[i], self.failed[i]) for i in self.asked)
        self.pending = dataclasses.replace(self.request, prompts=prompts)
        return self.pending

    def results(self) -> list[RunResult[Any]]:
        if self.failed:
            index = min(self.failed)
            error = self.failed[index]
            where = f"prompt {index}: " if len(self.request.prompts) > 1 else ""
            raise OutputValidationError(
                f"{where}{error} (still invalid after {self.tries} "
                f"{'retry' if self.tries == 1 else 'retries'} with the error in the prompt)",
                raw_text=error.raw_text,
            ) from error
        return [self.done[i] for i in range(len(self.request.prompts))]
