"""Validation retries: rules a grammar cannot express (pydantic validators) are asked again with the error."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import field_validator

import llmrun
from llmrun import Context, GenerationConfig, Type
from llmrun.errors import (
    BatchError,
    IncompleteOutputError,
    InvalidInputError,
    OutputValidationError,
    ServiceUnavailableError,
)
from llmrun.runner import Completion, CompletionRequest
from llmrun.testing import FunctionRunner
from llmrun.testing.lamini_server import FakeLaminiServer


class Capital(Type):
    city: str = Context("the capital city")

    @field_validator("city")
    @classmethod
    def capitalised(cls, value: str) -> str:
        if not value[:1].isupper():
            raise ValueError("the city must start with a capital letter")
        return value


def learner(prompts: list[str]) -> FunctionRunner:
    """Answers lower case until the prompt carries the validation error, then corrects itself."""

    def answer(prompt: str, request: CompletionRequest) -> str:
        prompts.append(prompt)
        fixed = "must start with a capital letter" in prompt
        return json.dumps({"city": "Paris" if fixed else "paris"})

    return FunctionRunner(answer)


def test_a_retry_carries_the_error_and_the_bad_output_in_the_prompt() -> None:
    prompts: list[str] = []
    runner = learner(prompts)
    assert runner("Capital of France?", output_type=Capital, retries=1) == Capital(city="Paris")
    assert len(prompts) == 2
    assert prompts[1].startswith(prompts[0])
    assert "A previous answer was rejected" in prompts[1]
    assert '\'{"city": "paris"}\'' in prompts[1]


def test_no_retries_by_default() -> None:
    prompts: list[str] = []
    with pytest.raises(OutputValidationError, match="capital letter"):
        learner(prompts)("Capital of France?", output_type=Capital)
    assert len(prompts) == 1


def test_per_runner_retries_and_per_call_override() -> None:
    prompts: list[str] = []
    runner = learner(prompts)
    runner.generation = GenerationConfig(retries=2)
    assert runner("Q", output_type=Capital).city == "Paris"
    with pytest.raises(OutputValidationError):
        runner("Q", output_type=Capital, retries=0)


def test_exhausted_retries_raise_saying_how_many() -> None:
    calls: list[str] = []

    def stubborn(prompt: str, request: CompletionRequest) -> str:
        calls.append(prompt)
        return '{"city": "paris"}'

    with pytest.raises(OutputValidationError, match=r"still invalid after 2 retries") as caught:
        FunctionRunner(stubborn)("Q", output_type=Capital, retries=2)
    assert caught.value.raw_text == '{"city": "paris"}'
    assert len(calls) == 3


def test_only_the_failed_prompts_of_a_batch_are_asked_again() -> None:
    requests: list[tuple[str, ...]] = []

    def answer(prompt: str, request: CompletionRequest) -> str:
        if not requests or requests[-1] != request.prompts:
            requests.append(request.prompts)
        good = prompt.startswith("good") or "rejected" in prompt
        return json.dumps({"city": "Rome" if good else "rome"})

    runner = FunctionRunner(answer)
    out = runner(["good 1", "bad 2", "good 3", "bad 4"], output_type=Capital, retries=1)
    assert [c.city for c in out] == ["Rome"] * 4
    assert len(requests) == 2
    assert len(requests[1]) == 2
    assert requests[1][0].startswith("bad 2") and requests[1][1].startswith("bad 4")  # noqa: PT018


def test_a_batch_item_still_invalid_fails_alone_keeping_the_others() -> None:
    def answer(prompt: str, request: CompletionRequest) -> str:
        return json.dumps({"city": "rome" if prompt.startswith("stubborn") else "Rome"})

    with pytest.raises(BatchError) as caught:
        FunctionRunner(answer)(["fine", "stubborn", "fine too"], output_type=Capital, retries=2)
    assert caught.value.failed == [1]
    assert isinstance(caught.value.failures[1], OutputValidationError)
    assert "still invalid after 2 retries" in str(caught.value.failures[1])
    assert caught.value.results[0] == Capital(city="Rome")
    assert caught.value.results[1] is None


def test_a_backend_failure_in_a_batch_is_not_retried() -> None:
    calls: list[tuple[str, ...]] = []

    class Flaky(FunctionRunner):
        def complete(self, request: CompletionRequest) -> list[Completion]:
            calls.append(request.prompts)
            if len(calls) == 1:
                down = ServiceUnavailableError("item 1 is down")
                raise BatchError("1 of 2 failed", {1: down}, [Completion('{"city": "rome"}'), None])
            return [Completion('{"city": "Rome"}') for _ in request.prompts]

    with pytest.raises(BatchError) as caught:
        Flaky(lambda p, r: "")(["a", "b"], output_type=Capital, retries=1)
    assert len(calls) == 2
    assert len(calls[1]) == 1  # only the invalid item 0 was asked again
    assert caught.value.failed == [1]
    assert isinstance(caught.value.failures[1], ServiceUnavailableError)
    assert caught.value.results[0] == Capital(city="Rome")


async def test_async_retries() -> None:
    prompts: list[str] = []
    assert (await learner(prompts).agenerate("Q", output_type=Capital, retries=1)).city == "Paris"
    result = await learner([]).arun("Q", output_type=Capital, retries=1)
    assert result.output.city == "Paris"


def test_output_cut_by_the_budget_is_not_retried() -> None:
    calls: list[str] = []

    def cut(prompt: str, request: CompletionRequest) -> Completion:
        calls.append(prompt)
        return Completion('{"city": "Par', "length")

    with pytest.raises(IncompleteOutputError):
        FunctionRunner(cut)("Q", output_type=Capital, retries=3)
    assert len(calls) == 1


@pytest.mark.parametrize("bad", [-1, 11, True, 1.5, "2"])
def test_bad_retries_are_refused(bad: Any) -> None:
    with pytest.raises(InvalidInputError, match="retries="):
        FunctionRunner(lambda p, r: "{}")("Q", output_type=Capital, retries=bad)


def test_retries_against_the_fake_lamini_server() -> None:
    pytest.importorskip("lamini", reason="the lamini backend needs the optional lamini client")
    with FakeLaminiServer(api_key="sk-retry-key") as server:
        server.responder = lambda prompt, output_type: {"city": "Paris" if "rejected" in prompt else "paris"}
        runner = llmrun.load("m", backend="lamini", api_key="sk-retry-key", api_url=server.url)
        assert runner("Capital of France?", output_type=Capital, retries=1) == Capital(city="Paris")
        sent = [r.body["prompt"] for r in server.requests_to("/v1/completions")]
        assert len(sent) == 2
        assert "must start with a capital letter" in sent[1]
