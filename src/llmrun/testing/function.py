"""``FunctionRunner``: a runner whose answers come from your function, and whose streams follow your script.

Where :class:`~llmrun.testing.FakeRunner` makes up schema-valid data, a
``FunctionRunner`` answers exactly what a test decides, from the request it got::

    def answer(prompt: str, request: CompletionRequest) -> object:
        if request.output_type is Answer:
            return Answer(answer="Paris", confidence=0.9)    # or a dict, or JSON text
        return " Paris"

    runner = FunctionRunner(answer)

``function(prompt, request)`` is called once per prompt (async functions work
too) and returns a ``str`` (the text), a :class:`~llmrun.Type` instance or a
JSON value (for typed requests), a :class:`~llmrun.runner.Completion` (to set
the finish reason and usage), or raises. ``stream_function(prompt, request)``
yields the chunks of a stream; an exception it yields is raised at that point,
so ``stream_script('{"a": 1}', size=2, fail_at=3)`` fails on the fourth chunk.
Without a ``stream_function``, streams are the function's text in chunks of
``chunk_size`` characters; without a ``function``, completions join the stream.
Every request is kept in ``requests``.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any, ClassVar

from llmrun.errors import InvalidInputError, ServiceUnavailableError
from llmrun.generation import GenerationConfig
from llmrun.runner import Capabilities, Completion, CompletionRequest, ModelRunner
from llmrun.schema import Type

__all__ = ["FunctionRunner", "RequestFunction", "StreamFunction", "stream_script"]

RequestFunction = Callable[[str, CompletionRequest], Any]
StreamFunction = Callable[[str, CompletionRequest], Iterable["str | BaseException"]]


class FunctionRunner(ModelRunner):
    """A runner driven by a function per prompt and, for streams, a per-chunk script."""

    __test__ = False
    backend_name: ClassVar[str] = "function"
    capabilities: ClassVar[Capabilities] = Capabilities(streams=True)

    def __init__(
        self,
        function: RequestFunction | None = None,
        *,
        stream_function: StreamFunction | None = None,
        model_name: str = "function-model",
        generation: GenerationConfig | None = None,
        template: str | None = None,
        chunk_size: int = 8,
    ) -> None:
        super().__init__(model_name, generation=generation, template=template)
        if function is None and stream_function is None:
            raise InvalidInputError("FunctionRunner needs a function, a stream_function, or both")
        for name, fn in (("function", function), ("stream_function", stream_function)):
            if fn is not None and not callable(fn):
                raise InvalidInputError(f"{name} must be callable as (prompt, request), got {fn!r}")
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise InvalidInputError(f"chunk_size={chunk_size!r} is invalid: it must be a positive integer")
        self.function = function
        self.stream_function = stream_function
        self.chunk_size = chunk_size
        self.requests: list[CompletionRequest] = []

    @property
    def last_request(self) -> CompletionRequest | None:
        """The most recent request, or None before the first call."""
        return self.requests[-1] if self.requests else None

    def complete(self, request: CompletionRequest) -> list[Completion]:
        self.requests.append(request)
        return [self._answer(prompt, request) for prompt in request.prompts]

    async def acomplete(self, request: CompletionRequest) -> list[Completion]:
        self.requests.append(request)
        answers: list[Completion] = []
        for prompt in request.prompts:
            if self.function is None:
                answers.append(self._joined_stream(prompt, request))
                continue
            value = self.function(prompt, request)
            if inspect.isawaitable(value):
                value = await value
            answers.append(_completion(value, request))
        return answers

    def stream_completion(self, request: CompletionRequest) -> Iterator[str]:
        if len(request.prompts) != 1:
            raise InvalidInputError("stream_completion() takes a request with exactly one prompt")
        self.requests.append(request)
        prompt = request.prompts[0]
        if self.stream_function is None:
            text = self._answer(prompt, request).text
            script: Iterable[str | BaseException] = _pieces(text, self.chunk_size)
        else:
            script = self.stream_function(prompt, request)
        for index, chunk in enumerate(script):
            if isinstance(chunk, BaseException):
                raise chunk
            if not isinstance(chunk, str):
                raise InvalidInputError(
                    f"stream_function yielded a {type(chunk).__name__} as chunk {index}; "
                    "yield str chunks, or an exception to raise there"
                )
            yield chunk

    def _answer(self, prompt: str, request: CompletionRequest) -> Completion:
        if self.function is None:
            return self._joined_stream(prompt, request)
        value = self.function(prompt, request)
        if inspect.isawaitable(value):
            value = asyncio.run(_awaited(value))
        return _completion(value, request)

    def _joined_stream(self, prompt: str, request: CompletionRequest) -> Completion:
        stream = self.stream_function
        if stream is None:  # the constructor requires one of the two
            raise InvalidInputError("FunctionRunner needs a function, a stream_function, or both")
        pieces: list[str] = []
        for chunk in stream(prompt, request):
            if isinstance(chunk, BaseException):
                raise chunk
            pieces.append(chunk)
        return Completion("".join(pieces))


def stream_script(
    text: str, size: int = 8, *, fail_at: int | None = None, error: BaseException | None = None
) -> list[str | BaseException]:
    """``text`` in chunks of ``size`` characters; with ``fail_at=k``, ``error`` raised instead of chunk k.

    The default error is a :class:`~llmrun.errors.ServiceUnavailableError`, what a
    dropped connection to a cloud backend becomes.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise InvalidInputError(f"size={size!r} is invalid: it must be a positive integer")
    script: list[str | BaseException] = list(_pieces(text, size))
    if fail_at is not None:
        if isinstance(fail_at, bool) or not isinstance(fail_at, int) or fail_at < 0:
            raise InvalidInputError(f"fail_at={fail_at!r} is invalid: it must be a chunk index >= 0")
        failure = error or ServiceUnavailableError(f"stream_script: injected failure at chunk {fail_at}")
        script = [*script[:fail_at], failure]
    return script


def _pieces(text: str, size: int) -> list[str]:
    return [text[start : start + size] for start in range(0, len(text), size)] or [""]


async def _awaited(value: Any) -> Any:
    return await value


def _completion(value: Any, request: CompletionRequest) -> Completion:
    if isinstance(value, BaseException):
        raise value
    if isinstance(value, Completion):
        return value
    if isinstance(value, str):
        return Completion(value)
    if isinstance(value, Type):
        return Completion(value.model_dump_json())
    if request.output is not None:
        try:
            return Completion(json.dumps(value))
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"the function returned {value!r}, which is not JSON: {exc}") from None
    raise InvalidInputError(
        f"the function returned a {type(value).__name__} for a text request; return a str "
        "(or a Completion), or ask for typed output"
    )
