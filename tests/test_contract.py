"""The backend contract: completions with finish reason and usage, the output spec, run()/arun()."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Literal

import pytest

import llmrun
from llmrun import Context, Type
from llmrun.capabilities import field_kinds
from llmrun.errors import (
    IncompleteOutputError,
    InvalidInputError,
    OutputValidationError,
    SchemaError,
    UnsupportedFeatureError,
)
from llmrun.runner import (
    Capabilities,
    Completion,
    CompletionRequest,
    ModelRunner,
    OutputSpec,
    RunResult,
    Usage,
)
from llmrun.testing import FakeRunner


class Answer(Type):
    answer: str = Context("a short answer")
    score: int = Context("a score", ge=1, le=5)


def test_usage_total_is_known_only_when_both_parts_are() -> None:
    assert Usage(3, 4).total_tokens == 7
    assert Usage(3, None).total_tokens is None
    assert Usage().total_tokens is None


def test_output_spec_for_type_is_built_once_and_carried_on_the_request() -> None:
    runner = FakeRunner()
    runner("q", output_type=Answer)
    request = runner.last_request
    assert request is not None
    assert request.output is not None
    assert request.output.output_type is Answer
    assert request.output.name == "Answer"
    assert request.output.json_schema == Answer.model_json_schema()
    assert request.output_type is Answer


def test_output_spec_for_type_rejects_non_types() -> None:
    with pytest.raises(SchemaError, match=r"subclass of llmrun\.Type"):
        OutputSpec.for_type(dict)  # type: ignore[arg-type]


def test_output_spec_for_schema_parses_json_values() -> None:
    spec = OutputSpec.for_schema({"type": "object", "properties": {"n": {"type": "integer"}}}, name="Count")
    assert spec.output_type is None
    assert spec.parse('{"n": 3}') == {"n": 3}
    with pytest.raises(OutputValidationError, match="not valid JSON for Count") as info:
        spec.parse('{"n": ')
    assert info.value.raw_text == '{"n": '


def test_an_empty_output_schema_means_any_json_value() -> None:
    assert OutputSpec.for_schema({}).parse('[1, {"a": null}]') == [1, {"a": None}]


@pytest.mark.parametrize("schema", [[], "object", {"type": "objet"}])
def test_output_spec_for_schema_rejects_non_schemas(schema: object) -> None:
    with pytest.raises(SchemaError, match="output_schema"):
        OutputSpec.for_schema(schema)  # type: ignore[arg-type]


def test_run_returns_output_text_finish_reason_and_usage() -> None:
    runner = FakeRunner()
    result = runner.run("hello there", max_new_tokens=5)
    assert isinstance(result, RunResult)
    assert result.output == result.text == runner("hello there", max_new_tokens=5)
    assert result.finish_reason == "length"  # five words for a budget of five
    assert result.usage == Usage(prompt_tokens=2, completion_tokens=5)
    assert runner.run("hello there", max_new_tokens=50).finish_reason == "stop"


def test_run_typed_and_batched_keeps_order() -> None:
    runner = FakeRunner()
    results = runner.run(["a", "b"], output_type=Answer)
    assert isinstance(results, list)
    assert [r.output for r in results] == runner(["a", "b"], output_type=Answer)
    assert all(isinstance(r.output, Answer) and json.loads(r.text) for r in results)


def test_arun() -> None:
    result = asyncio.run(FakeRunner().arun("x", output_type=Answer))
    assert isinstance(result, RunResult)
    assert isinstance(result.output, Answer)


class _Scripted(ModelRunner):
    """A backend answering with the completions it is given."""

    backend_name = "scripted"

    def __init__(self, completions: list[Completion | str]) -> None:
        super().__init__("m")
        self.completions = completions

    def complete(self, request: CompletionRequest) -> list[Completion]:
        return self.completions  # type: ignore[return-value]


def test_a_cut_off_typed_completion_is_an_incomplete_output_error() -> None:
    runner = _Scripted([Completion('{"answer": "ab', "length", Usage(4, 8))])
    with pytest.raises(IncompleteOutputError, match=r"max_new_tokens=256.*Answer JSON") as info:
        runner("q", output_type=Answer)
    assert info.value.partial_text == '{"answer": "ab'


def test_a_complete_typed_completion_parses_even_at_the_budget() -> None:
    runner = _Scripted([Completion('{"answer": "ab", "score": 2}', "length")])
    assert runner("q", output_type=Answer) == Answer(answer="ab", score=2)


def test_invalid_typed_completion_that_stopped_is_a_validation_error() -> None:
    runner = _Scripted([Completion('{"answer": "ab", "score": 9}', "stop")])
    with pytest.raises(OutputValidationError, match="score"):
        runner("q", output_type=Answer)


def test_plain_strings_from_older_backends_still_work() -> None:
    result = _Scripted(["hi"]).run("q")
    assert result == RunResult("hi", "hi", "stop", Usage())


def test_backend_returning_something_else_is_caught() -> None:
    with pytest.raises(InvalidInputError, match="must return llmrun Completion"):
        _Scripted([42])("q")  # type: ignore[list-item]


def test_stream_completion_is_request_in() -> None:
    runner = FakeRunner()
    request = CompletionRequest(("hello",), runner.generation)
    assert "".join(runner.stream_completion(request)) == runner.complete(request)[0].text


def test_local_finish_reason_and_token_counts(tiny_gpt_neox_dir: Path) -> None:
    runner = llmrun.load(str(tiny_gpt_neox_dir), backend="local", device="cpu")
    prompt = "The highest mountain in the world is"
    prompt_tokens = len(runner.tokenizer(prompt)["input_ids"])  # type: ignore[attr-defined]
    cut = runner.run(prompt, max_new_tokens=3)
    assert cut.finish_reason == "length"
    assert cut.usage == Usage(prompt_tokens=prompt_tokens, completion_tokens=3)
    assert cut.output == runner(prompt, max_new_tokens=3)
    # a stop sequence taken from the text itself ends the completion early, with "stop"
    longer = runner.run(prompt, max_new_tokens=12)
    stop = longer.text[len(longer.text) // 2 :][:3]
    stopped = runner.run(prompt, max_new_tokens=12, stop=stop)
    assert stopped.finish_reason == "stop"
    assert stopped.text == longer.text[: longer.text.find(stop)]
    typed = runner.run(prompt, output_type=Answer, max_new_tokens=64)
    assert typed.finish_reason == "stop"  # the grammar closed the JSON within the budget
    assert isinstance(typed.output, Answer)
    assert typed.usage.completion_tokens is not None
    assert 0 < typed.usage.completion_tokens <= 64


class _GreedyOnly(_Scripted):
    """A backend that declares it honours no sampling option and no list fields."""

    capabilities = Capabilities(
        streams=False, sampling=frozenset({"stop"}), field_kinds=frozenset({"str", "int"})
    )


class Tagged(Type):
    tags: list[str] = Context("some tags")


@pytest.mark.parametrize(("option", "value"), [("temperature", 0.5), ("seed", 3), ("top_k", 4)])
def test_capabilities_refuse_sampling_options_before_any_call(option: str, value: object) -> None:
    runner = _GreedyOnly(["x"])
    with pytest.raises(UnsupportedFeatureError, match=rf"{option}={value!r} cannot be honoured: _GreedyOnly"):
        runner("q", **{option: value})
    assert runner("q", stop=["\n"]) == "x"  # a declared option passes


def test_capabilities_refuse_field_kinds_and_streaming() -> None:
    runner = _GreedyOnly(['{"tags": []}'])
    with pytest.raises(UnsupportedFeatureError, match=r"Tagged\.tags is a list field"):
        runner("q", output_type=Tagged)
    with pytest.raises(UnsupportedFeatureError, match=r"_GreedyOnly.*cannot stream"):
        runner.stream("q")


def test_field_kinds_of_a_type() -> None:
    class Inner(Type):
        n: int | None = Context("n")

    class Outer(Type):
        inner: Inner = Context("inner")
        kind: Literal["a", "b"] = Context("kind")
        flags: list[bool] = Context("flags")

    assert field_kinds(Outer) == {
        "nested": "inner",
        "optional": "inner.n",
        "int": "inner.n",
        "literal": "kind",
        "list": "flags",
        "bool": "flags",
    }
