"""``FakeRunner``: a backend for your own tests, with no model and no network.

* Deterministic: the same prompt, seed and output type always give the same output.
* Typed calls return schema-valid instances of the output type.
* Scripted: ``responses`` are returned in order — a ``str``, a ``Type``
  instance, an exception (raised), or a callable ``(prompt, request) -> str | Type``.
* Observable: every :class:`~llmrun.runner.CompletionRequest` is kept in ``requests``.
* Usage counts whitespace-separated words of the prompt and the text, a stand-in for tokens;
  an unscripted text call that uses its whole budget of words finishes with ``"length"``.

Registered as backend ``fake``: ``llmrun.load("any-name", backend="fake")``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import ClassVar

from llmrun.errors import InvalidInputError
from llmrun.generation import GenerationConfig
from llmrun.runner import Capabilities, Completion, CompletionRequest, FinishReason, ModelRunner, Usage
from llmrun.schema import Type
from llmrun.testing.sample import sample_value

Response = str | Type | BaseException | Callable[[str, CompletionRequest], "str | Type"]

_WORDS = ("the", "model", "says", "hello", "world", "and", "answers", "in", "kind", "today")


class FakeRunner(ModelRunner):
    """A seeded, scriptable, observable stand-in for a model."""

    __test__ = False
    backend_name: ClassVar[str] = "fake"
    capabilities: ClassVar[Capabilities] = Capabilities(streams=True)

    def __init__(
        self,
        model_name: str = "fake-model",
        *,
        generation: GenerationConfig | None = None,
        template: str | None = None,
        seed: int = 0,
        responses: Iterable[Response] = (),
        delay: float = 0.0,
    ) -> None:
        super().__init__(model_name, generation=generation, template=template)
        if isinstance(delay, bool) or not isinstance(delay, int | float) or delay < 0:
            raise InvalidInputError(f"delay={delay!r} is invalid: it must be a number of seconds >= 0")
        self.seed = seed
        self.delay = float(delay)
        self.responses: deque[Response] = deque(responses)
        self.requests: list[CompletionRequest] = []

    @property
    def last_request(self) -> CompletionRequest | None:
        """The most recent request, or None before the first call."""
        return self.requests[-1] if self.requests else None

    def script(self, *responses: Response) -> None:
        """Queue more scripted responses."""
        self.responses.extend(responses)

    def complete(self, request: CompletionRequest) -> list[Completion]:
        self.requests.append(request)
        if self.delay:
            time.sleep(self.delay)
        return [self._one(prompt, request) for prompt in request.prompts]

    async def acomplete(self, request: CompletionRequest) -> list[Completion]:
        self.requests.append(request)
        if self.delay:
            await asyncio.sleep(self.delay)
        return [self._one(prompt, request) for prompt in request.prompts]

    def stream_completion(self, request: CompletionRequest) -> Iterator[str]:
        if len(request.prompts) != 1:
            raise InvalidInputError("stream_completion() takes a request with exactly one prompt")
        text = self.complete(request)[0].text
        for start in range(0, len(text), 8):
            yield text[start : start + 8]

    def _one(self, prompt: str, request: CompletionRequest) -> Completion:
        finish: FinishReason = "stop"
        if self.responses:
            text = self._scripted(self.responses.popleft(), prompt, request)
        elif request.output is not None:
            rng = random.Random(self._seed_for(prompt, request))
            text = json.dumps(sample_value(request.output.json_schema, rng))
        else:
            rng = random.Random(self._seed_for(prompt, request))
            count = min(request.max_new_tokens, 12)
            full = " " + " ".join(rng.choice(_WORDS) for _ in range(count))
            text = _cut_at_stop(full, request.config.stop)
            finish = "length" if count == request.max_new_tokens and text == full else "stop"
        usage = Usage(prompt_tokens=len(prompt.split()), completion_tokens=len(text.split()))
        return Completion(text, finish, usage)

    def _scripted(self, response: Response, prompt: str, request: CompletionRequest) -> str:
        if isinstance(response, BaseException):
            raise response
        if callable(response) and not isinstance(response, Type):
            response = response(prompt, request)
        if isinstance(response, Type):
            return response.model_dump_json()
        if isinstance(response, str):
            return response
        raise InvalidInputError(
            f"scripted response {response!r} is not a str, a Type instance, an exception or a callable"
        )

    def _seed_for(self, prompt: str, request: CompletionRequest) -> int:
        seed = request.config.seed if request.config.seed is not None else self.seed
        key = f"{seed}\0{prompt}\0{request.output.name if request.output else ''}"
        return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")


def _cut_at_stop(text: str, stop: tuple[str, ...]) -> str:
    cut = min((i for s in stop if (i := text.find(s)) >= 0), default=len(text))
    return text[:cut]
