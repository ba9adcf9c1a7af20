"""The shared plumbing of ModelRunner, exercised through the FakeRunner backend."""

from __future__ import annotations

import asyncio
import time

import pytest

import llmrun
from llmrun import Context, GenerationConfig, Type
from llmrun.errors import (
    IncompleteOutputError,
    InvalidInputError,
    OutputValidationError,
    RequestTimeoutError,
    UnsupportedFeatureError,
)
from llmrun.runner import CompletionRequest, ModelRunner
from llmrun.testing import FakeRunner


class Question(Type):
    question: str = Context("a question")


class Answer(Type):
    answer: str = Context("a short answer")
    score: int = Context("a score", ge=1, le=5)


def test_single_and_batch_keep_order_and_types() -> None:
    runner = FakeRunner(seed=3)
    one = runner("a")
    many = runner(["a", "b", "c"])
    assert isinstance(one, str)
    assert many[0] == one
    assert len(many) == 3
    assert [r.prompts for r in runner.requests] == [("a",), ("a", "b", "c")]


def test_typed_single_and_batch() -> None:
    runner = FakeRunner()
    ans = runner(Question(question="q"), output_type=Answer)
    assert isinstance(ans, Answer)
    batch = runner([Question(question="q"), Question(question="r")], output_type=Answer)
    assert [type(a) for a in batch] == [Answer, Answer]
    assert batch[0] == ans
    assert runner.last_request is not None
    assert runner.last_request.output_type is Answer
    assert "Respond with a JSON object (Answer)" in runner.last_request.prompts[0]


def test_same_seed_same_output_other_seed_differs() -> None:
    assert FakeRunner(seed=1)("x") == FakeRunner(seed=1)("x")
    assert FakeRunner(seed=1)("x") != FakeRunner(seed=2)("x")


def test_per_call_options_merge_over_runner_defaults() -> None:
    runner = FakeRunner(generation=GenerationConfig(max_new_tokens=5, temperature=0.5))
    runner("x", max_new_tokens=9, stop=["\n"])
    config = runner.requests[-1].config
    assert (config.max_new_tokens, config.temperature, config.stop) == (9, 0.5, ("\n",))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_new_tokens": 0}, "max_new_tokens=0 is invalid"),
        ({"max_new_tokens": -3}, "max_new_tokens=-3 is invalid"),
        ({"temperature": -0.1}, "temperature=-0.1 is invalid"),
        ({"top_p": 0}, "top_p=0 is invalid"),
        ({"top_p": 1.5}, "top_p=1.5 is invalid"),
        ({"top_k": 0}, "top_k=0 is invalid"),
        ({"stop": [""]}, "stop"),
        ({"nonsense": 1}, "unknown generation option"),
    ],
)
def test_bad_generation_options(options: dict[str, object], message: str) -> None:
    runner = FakeRunner()
    with pytest.raises(InvalidInputError, match=message):
        runner("x", **options)
    assert runner.requests == []


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ([], "the prompt list is empty"),
        (3, "prompt must be a str"),
        (["ok", 3], "prompt 1 is a int"),
        ("   ", "prompt 0 is empty"),
        ({"q": 1}, "prompt must be a str"),
    ],
)
def test_bad_prompts(prompt: object, message: str) -> None:
    runner = FakeRunner()
    with pytest.raises(InvalidInputError, match=message):
        runner(prompt)  # type: ignore[call-overload]
    assert runner.requests == []


def test_scripted_responses_and_injected_failures() -> None:
    runner = FakeRunner(
        responses=[
            "first",
            Answer(answer="yes", score=2),
            RequestTimeoutError("simulated timeout"),
            IncompleteOutputError("cut", partial_text='{"answer": "ye'),
            '{"answer": "x", "score": 99}',
        ]
    )
    assert runner("a") == "first"
    assert runner("b", output_type=Answer) == Answer(answer="yes", score=2)
    with pytest.raises(RequestTimeoutError):
        runner("c")
    with pytest.raises(IncompleteOutputError) as info:
        runner("d", output_type=Answer)
    assert info.value.partial_text == '{"answer": "ye'
    with pytest.raises(OutputValidationError, match="score"):
        runner("e", output_type=Answer)


def test_stream_pieces_join_to_full_text() -> None:
    runner = FakeRunner()
    pieces = list(runner.stream("tell me"))
    assert len(pieces) > 1
    assert "".join(pieces) == runner("tell me")


def test_stream_rejects_a_list() -> None:
    with pytest.raises(InvalidInputError, match="one prompt"):
        FakeRunner().stream(["a", "b"])  # type: ignore[arg-type]


async def test_agenerate_runs_concurrently() -> None:
    runner = FakeRunner(delay=0.2)
    start = time.perf_counter()
    results = await asyncio.gather(*(runner.agenerate(f"p{i}") for i in range(5)))
    assert time.perf_counter() - start < 0.9  # five 0.2 s calls overlapped instead of taking 1 s
    assert results == [FakeRunner()(f"p{i}") for i in range(5)]


async def test_agenerate_typed() -> None:
    ans = await FakeRunner().agenerate(Question(question="q"), output_type=Answer)
    assert isinstance(ans, Answer)


class MinimalRunner(ModelRunner):
    """A third-party backend with nothing but the one required verb."""

    backend_name = "minimal"

    def complete(self, request: CompletionRequest) -> list[str]:
        return [p.upper() for p in request.prompts]


def test_optional_abilities_raise_typed_errors_naming_the_class() -> None:
    runner = MinimalRunner("m")
    assert runner(["ab", "cd"]) == ["AB", "CD"]
    with pytest.raises(UnsupportedFeatureError, match=r"MinimalRunner.*cannot stream"):
        list(runner.stream("x"))
    from llmrun.data import load_examples
    from llmrun.training import TrainOptions

    with pytest.raises(UnsupportedFeatureError, match=r"MinimalRunner.*cannot fine-tune"):
        runner.train_examples(load_examples([{"input": "q", "output": "a"}]), TrainOptions())
    assert not hasattr(runner, "load_data")  # the 2023 data buffer lives in the facades


def test_backend_returning_wrong_count_is_caught() -> None:
    class Broken(MinimalRunner):
        def complete(self, request: CompletionRequest) -> list[str]:
            return []

    with pytest.raises(InvalidInputError, match="0 completions for 1 prompts"):
        Broken("m")("x")


def test_model_name_must_be_a_string() -> None:
    with pytest.raises(InvalidInputError, match="model_name"):
        FakeRunner("")


def test_train_without_data_says_how_to_load_it() -> None:
    from llmrun import BasicModelRunner

    with pytest.raises(InvalidInputError, match="load_data"):
        BasicModelRunner("m", backend="fake").train()


def test_load_fake_backend_by_name() -> None:
    runner = llmrun.load("whatever", backend="fake", seed=4)
    assert isinstance(runner, FakeRunner)
    assert runner.seed == 4
