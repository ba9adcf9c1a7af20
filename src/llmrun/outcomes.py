"""From what a backend returned to what a call returns: completions checked, typed outputs
parsed, and in a batch the failed items kept apart from the good ones (:class:`BatchError`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from llmrun.errors import BatchError, IncompleteOutputError, InvalidInputError, OutputValidationError

if TYPE_CHECKING:
    from llmrun.runner import Completion, CompletionRequest, OutputSpec, RunResult


def settled(
    complete: Callable[[CompletionRequest], Sequence[Completion | str]], request: CompletionRequest
) -> Sequence[Completion | str | None] | BatchError:
    """What the backend returned: its completions, or the BatchError holding those that succeeded."""
    try:
        return complete(request)
    except BatchError as exc:
        return exc


async def asettled(
    acomplete: Callable[[CompletionRequest], Awaitable[Sequence[Completion | str]]],
    request: CompletionRequest,
) -> Sequence[Completion | str | None] | BatchError:
    try:
        return await acomplete(request)
    except BatchError as exc:
        return exc


def results(
    done: Sequence[Completion | str | None] | BatchError, request: CompletionRequest, *, outputs: bool = False
) -> list[RunResult[Any]]:
    """Check a backend's completions against the request and parse typed outputs.

    A plain ``str`` from a backend written before :class:`Completion` counts as a finished
    completion with unknown usage. In a batch, items that failed (in the backend, or their
    output did not validate) do not cost the others: a :class:`~llmrun.errors.BatchError`
    carries every item's result (the outputs when ``outputs``, else :class:`RunResult`) or
    ``None``, and names the failed items; a single prompt raises its own error.
    """
    count = len(request.prompts)
    failures: dict[int, BaseException] = dict(done.failures) if isinstance(done, BatchError) else {}
    items: Sequence[Any] = (done.results or [None] * count) if isinstance(done, BatchError) else done
    if not isinstance(items, list | tuple) or len(items) != count:
        got = len(items) if isinstance(items, list | tuple) else type(items).__name__
        raise InvalidInputError(f"backend returned {got} completions for {count} prompts")
    found: list[RunResult[Any] | None] = []
    for index, item in enumerate(items):
        if index in failures:
            found.append(None)
            continue
        if item is None:
            raise InvalidInputError(f"backend returned no completion for prompt {index} and no error for it")
        try:
            found.append(_result(item, request))
        except (OutputValidationError, IncompleteOutputError) as exc:
            failures[index] = exc
            found.append(None)
    if failures:
        if count == 1:
            raise failures[0]
        kept = [None if r is None else r.output if outputs else r for r in found]
        raise BatchError.of(failures, kept)
    return [r for r in found if r is not None]


def _result(item: Completion | str, request: CompletionRequest) -> RunResult[Any]:
    from llmrun.runner import Completion, RunResult

    done = Completion(item) if isinstance(item, str) else item
    if not isinstance(done, Completion):
        raise InvalidInputError(
            f"backend returned a {type(done).__name__}; complete() must return llmrun Completion objects"
        )
    output: Any = done.text
    if request.output is not None:
        output = _parse(request.output, request.max_new_tokens, done)
    return RunResult(output, done.text, done.finish_reason, done.usage)


def _parse(output: OutputSpec, budget: int, done: Completion) -> Any:
    """A typed completion's output; a cut-off one that does not parse is an :class:`IncompleteOutputError`."""
    try:
        return output.parse(done.text)
    except OutputValidationError:
        if done.finish_reason != "length":
            raise
        raise IncompleteOutputError(
            f"the token budget (max_new_tokens={budget}) ran out before the "
            f"{output.name} JSON was complete; raise max_new_tokens",
            partial_text=done.text,
        ) from None
