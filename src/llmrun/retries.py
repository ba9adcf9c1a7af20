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
When the last try still fails, the call fails as a call without retries does
(:class:`~llmrun.errors.OutputValidationError` for one prompt, a
:class:`~llmrun.errors.BatchError` keeping the good results for a batch), the
error saying how many retries were made. Items that failed in the backend are
not retried here (the backends retry their own transient errors). Output cut off by the
token budget (:class:`~llmrun.errors.IncompleteOutputError`) is not retried:
the same budget would cut it again; raise ``max_new_tokens`` instead.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from llmrun.errors import BatchError, IncompleteOutputError, InvalidInputError, OutputValidationError

if TYPE_CHECKING:
    from llmrun.runner import Completion, CompletionRequest, RunResult

__all__ = ["acomplete_validated", "complete_validated", "retry_prompt"]

#: What a backend call settled to: its completions, or the BatchError holding those that succeeded.
Settled = Sequence["Completion | str | None"] | BatchError
#: The plumbing's parse (``llmrun.outcomes.results``): settled completions to results, or the call's error.
Parse = Callable[[Settled, "CompletionRequest"], "list[RunResult[Any]]"]


def retry_prompt(prompt: str, error: OutputValidationError) -> str:
    """The prompt of a retry: the original prompt, then what was wrong with the last answer."""
    return f"{prompt}\n\nA previous answer was rejected: {error}\nAnswer again, correcting that.\n"


def complete_validated(
    complete: Callable[[CompletionRequest], Settled], request: CompletionRequest, parse: Parse
) -> list[RunResult[Any]]:
    """``parse(complete(request))``, asking again for outputs that fail validation (``config.retries``)."""
    attempts = _Attempts(request, parse)
    if not attempts.retries:
        return parse(complete(request), request)  # exactly the plain path
    pending: CompletionRequest | None = request
    while pending is not None:
        pending = attempts.take(complete(pending))
    return attempts.finish()


async def acomplete_validated(
    acomplete: Callable[[CompletionRequest], Awaitable[Settled]], request: CompletionRequest, parse: Parse
) -> list[RunResult[Any]]:
    """Async :func:`complete_validated`."""
    attempts = _Attempts(request, parse)
    if not attempts.retries:
        return parse(await acomplete(request), request)
    pending: CompletionRequest | None = request
    while pending is not None:
        pending = attempts.take(await acomplete(pending))
    return attempts.finish()


class _Attempts:
    """One call: the completions that validated, the items that failed for good, those to ask again."""

    def __init__(self, request: CompletionRequest, parse: Parse) -> None:
        self.request = request
        self.parse = parse
        self.retries = request.config.retries if request.output is not None else 0
        self.good: dict[int, Completion | str] = {}
        self.failed: dict[int, BaseException] = {}  # in the backend, or cut by the budget: final
        self.invalid: dict[int, OutputValidationError] = {}  # asked again while tries remain
        self.asked = list(range(len(request.prompts)))  # the original index of each pending prompt
        self.tries = 0

    def take(self, done: Settled) -> CompletionRequest | None:
        """Sort the answers to the pending prompts; return the next request, or None when finished."""
        items: Any = done
        errors: dict[int, BaseException] = {}
        if isinstance(done, BatchError):
            items, errors = done.results or [None] * len(self.asked), dict(done.failures)
        if not isinstance(items, list | tuple) or len(items) != len(self.asked):
            got = len(items) if isinstance(items, list | tuple) else type(items).__name__
            raise InvalidInputError(f"backend returned {got} completions for {len(self.asked)} prompts")
        for position, index in enumerate(self.asked):
            self.invalid.pop(index, None)
            if position in errors:
                self.failed[index] = errors[position]
                continue
            one = dataclasses.replace(self.request, prompts=(self.request.prompts[index],))
            try:
                self.parse([items[position]], one)
            except OutputValidationError as exc:
                self.invalid[index] = exc
            except IncompleteOutputError as exc:
                self.failed[index] = exc
            else:
                self.good[index] = items[position]
        if not self.invalid or self.tries == self.retries:
            return None
        self.tries += 1
        self.asked = sorted(self.invalid)
        prompts = tuple(retry_prompt(self.request.prompts[i], self.invalid[i]) for i in self.asked)
        return dataclasses.replace(self.request, prompts=prompts)

    def finish(self) -> list[RunResult[Any]]:
        """The call's results, or its error, shaped by the plumbing's own parse."""
        retries = f"{self.tries} {'retry' if self.tries == 1 else 'retries'}"
        failures = dict(self.failed)
        for index, error in self.invalid.items():
            failures[index] = OutputValidationError(
                f"{error} (still invalid after {retries} with the error in the prompt)",
                raw_text=error.raw_text,
            )
        completions = [self.good.get(i) for i in range(len(self.request.prompts))]
        if failures:
            return self.parse(BatchError("validation retries", failures, completions), self.request)
        return self.parse(completions, self.request)
