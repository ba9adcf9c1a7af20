"""``FallbackRunner``: try the next runner when one fails with a named error.

::

    runner = llmrun.FallbackRunner(
        [llmrun.load("my-model", backend="lamini"), llmrun.load("EleutherAI/pythia-70m")],
        on=(ServiceUnavailableError, RequestTimeoutError),
    )
    runner("Q: ...")     # Lamini; on a 5xx after its own retries, or a timeout, the local model

Only the errors in ``on`` move on to the next runner (by default: the service
is down or overloaded, a timeout, rate limiting after retries ran out); any
other error (a bad key, a bad request, invalid output) is raised at once, as
it would be raised by the next runner too. A :class:`~llmrun.errors.BatchError`
that kept its good results sends only its failed items on. When every runner
fails, the last error is raised, with a note per earlier failure. A stream moves on only
before its first chunk: text already given out cannot be taken back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import ClassVar

from llmrun.errors import (
    BatchError,
    InvalidInputError,
    LLMRunError,
    RateLimitError,
    RequestTimeoutError,
    ServiceUnavailableError,
    UnsupportedFeatureError,
    renumbered,
)
from llmrun.generation import GenerationConfig
from llmrun.runner import Capabilities, Completion, CompletionRequest, ModelRunner

__all__ = ["DEFAULT_FALLBACK_ON", "FallbackRunner"]

#: The errors that make :class:`FallbackRunner` try the next runner by default.
DEFAULT_FALLBACK_ON: tuple[type[BaseException], ...] = (
    ServiceUnavailableError,
    RequestTimeoutError,
    RateLimitError,
)


class FallbackRunner(ModelRunner):
    """Ask ``runners`` in order; move to the next one only on an error listed in ``on``.

    ``model_name``, ``generation`` and ``template`` default to the first runner's,
    so prompts are rendered once, the same for all. A request must be one that every
    runner can honour (its sampling options are the ones they all support).
    ``last_runner`` is the runner that answered the last call.
    """

    backend_name: ClassVar[str] = "fallback"

    def __init__(
        self,
        runners: Sequence[ModelRunner],
        *,
        on: type[BaseException] | Sequence[type[BaseException]] = DEFAULT_FALLBACK_ON,
        generation: GenerationConfig | None = None,
        template: str | None = None,
    ) -> None:
        if isinstance(runners, ModelRunner) or not isinstance(runners, Sequence) or not runners:
            raise InvalidInputError(
                "FallbackRunner takes a non-empty list of runners, in the order to try them"
            )
        for i, runner in enumerate(runners):
            if not isinstance(runner, ModelRunner):
                raise InvalidInputError(f"runner {i} is a {type(runner).__name__}, not a llmrun ModelRunner")
        errors = (on,) if isinstance(on, type) else tuple(on) if isinstance(on, Sequence) else None
        if not errors or not all(isinstance(e, type) and issubclass(e, BaseException) for e in errors):
            raise InvalidInputError(
                f"on must be an exception class or a list of them, such as "
                f"(ServiceUnavailableError, RequestTimeoutError); got {on!r}"
            )
        first = runners[0]
        super().__init__(
            first.model_name,
            generation=generation or first.generation,
            template=template if template is not None else first.template,
        )
        self.runners: tuple[ModelRunner, ...] = tuple(runners)
        self.on: tuple[type[BaseException], ...] = errors
        self.last_runner: ModelRunner | None = None
        self.capabilities = Capabilities(  # type: ignore[misc]
            streams=any(r.capabilities.streams for r in runners),
            sampling=frozenset.intersection(*(r.capabilities.sampling for r in runners)),
        )

    def __repr__(self) -> str:
        return f"FallbackRunner({list(self.runners)!r}, on={tuple(e.__name__ for e in self.on)!r})"

    def complete(self, request: CompletionRequest) -> list[Completion]:
        return self._complete(request, 0, [])

    async def acomplete(self, request: CompletionRequest) -> list[Completion]:
        return await self._acomplete(request, 0, [])

    def _complete(
        self, request: CompletionRequest, start: int, failures: list[tuple[ModelRunner, BaseException]]
    ) -> list[Completion]:
        for position in range(start, len(self.runners)):
            runner = self.runners[position]
            try:
                completions = runner.complete(request)
            except BaseException as exc:
                self._sort(exc, position, runner, failures)
                part = _failed_part(exc, request)
                if part is None:
                    continue
                batch, indices, rest = part
                try:
                    return _joined(batch, indices, self._complete(rest, position + 1, failures))
                except LLMRunError as later:
                    raise _kept(later, batch, indices) from None
            self.last_runner = runner
            return completions
        raise AssertionError("unreachable: the last runner returns or raises")  # pragma: no cover

    async def _acomplete(
        self, request: CompletionRequest, start: int, failures: list[tuple[ModelRunner, BaseException]]
    ) -> list[Completion]:
        for position in range(start, len(self.runners)):
            runner = self.runners[position]
            try:
                completions = await runner.acomplete(request)
            except BaseException as exc:
                self._sort(exc, position, runner, failures)
                part = _failed_part(exc, request)
                if part is None:
                    continue
                batch, indices, rest = part
                try:
                    return _joined(batch, indices, await self._acomplete(rest, position + 1, failures))
                except LLMRunError as later:
                    raise _kept(later, batch, indices) from None
            self.last_runner = runner
            return completions
        raise AssertionError("unreachable: the last runner returns or raises")  # pragma: no cover

    def _sort(
        self,
        error: BaseException,
        position: int,
        runner: ModelRunner,
        failures: list[tuple[ModelRunner, BaseException]],
    ) -> None:
        """Raise ``error`` unless it moves on to a next runner; else note it."""
        if not self._moves_on(error) or position == len(self.runners) - 1:
            raise _with_notes(error, failures) from None
        failures.append((runner, error))

    def stream_completion(self, request: CompletionRequest) -> Iterator[str]:
        failures: list[tuple[ModelRunner, BaseException]] = []
        streaming = [r for r in self.runners if r.capabilities.streams]
        if not streaming:
            raise UnsupportedFeatureError(f"none of the runners of {self!r} can stream")
        for runner in streaming:
            chunks = runner.stream_completion(request)
            try:
                first = next(chunks, None)
            except BaseException as exc:
                if not self._moves_on(exc) or runner is streaming[-1]:
                    raise _with_notes(exc, failures) from None
                failures.append((runner, exc))
                continue
            self.last_runner = runner
            if first is not None:
                yield first
            yield from chunks
            return

    def _moves_on(self, error: BaseException) -> bool:
        if isinstance(error, BatchError):
            return bool(error.failures) and all(self._moves_on(e) for e in error.failures.values())
        return isinstance(error, self.on)


def _with_notes(error: BaseException, failures: list[tuple[ModelRunner, BaseException]]) -> BaseException:
    for runner, earlier in failures:
        error.add_note(f"FallbackRunner: {runner!r} failed before with {type(earlier).__name__}: {earlier}")
    return error


def _failed_part(
    error: BaseException, request: CompletionRequest
) -> tuple[BatchError, list[int], CompletionRequest] | None:
    """For a batch that kept its good results, the failed items and the request of just those."""
    count = len(request.prompts)
    if not isinstance(error, BatchError) or len(error.results) != count or not 0 < len(error.failed) < count:
        return None
    indices = error.failed
    return error, indices, dataclasses.replace(request, prompts=tuple(request.prompts[i] for i in indices))


def _joined(error: BatchError, indices: list[int], rest: list[Completion]) -> list[Completion]:
    merged = list(error.results)
    for index, completion in zip(indices, rest, strict=True):
        merged[index] = completion
    return merged


def _kept(later: LLMRunError, error: BatchError, indices: list[int]) -> BatchError:
    """The next runners failed (some of) the failed items too: a BatchError that keeps the good ones."""
    if isinstance(later, BatchError):
        return renumbered(later, indices, list(error.results))
    return BatchError.of(dict.fromkeys(indices, later), list(error.results))
