"""Every backend honours the same contract: typed results are valid instances, order is kept,
bad requests fail the same way before any work is done."""

from __future__ import annotations

import pytest

from llmrun import Type
from llmrun.capabilities import SAMPLING_OPTIONS, field_kinds
from llmrun.errors import InvalidInputError, SchemaError, UnsupportedFeatureError
from llmrun.runner import ModelRunner

from .schemas import ALL_SCHEMAS, SCALAR_SCHEMAS, Question

QUESTIONS = [Question(question=q) for q in ("Who wrote Hamlet?", "What is 2 + 2?", "Where is Paris?")]


@pytest.mark.parametrize("schema", ALL_SCHEMAS, ids=lambda s: s.__name__)
def test_typed_single_is_a_valid_instance_or_declined_as_declared(
    runner: ModelRunner, schema: type[Type]
) -> None:
    missing = set(field_kinds(schema)) - runner.capabilities.field_kinds
    if missing:  # the backend says it cannot hold these fields: it must refuse before any call
        with pytest.raises(UnsupportedFeatureError, match=f"{sorted(missing)[0]} field"):
            runner(QUESTIONS[0], output_type=schema, max_new_tokens=96)
        return
    result = runner(QUESTIONS[0], output_type=schema, max_new_tokens=96)
    assert type(result) is schema
    assert schema.model_validate(result.model_dump()) == result


@pytest.mark.parametrize("option", sorted(SAMPLING_OPTIONS))
def test_sampling_options_are_honoured_or_refused_as_declared(runner: ModelRunner, option: str) -> None:
    value = {
        "temperature": 0.7,
        "top_p": 0.9,
        "top_k": 5,
        "repetition_penalty": 1.2,
        "stop": ["\n"],
        "seed": 7,
    }
    if option in runner.capabilities.sampling:
        assert isinstance(runner("The sky is", max_new_tokens=4, **{option: value[option]}), str)
    else:
        with pytest.raises(UnsupportedFeatureError, match=option):
            runner("The sky is", max_new_tokens=4, **{option: value[option]})


def test_streaming_as_declared(runner: ModelRunner) -> None:
    if runner.capabilities.streams:
        assert "".join(runner.stream("The sky is", max_new_tokens=6)) == runner(
            "The sky is", max_new_tokens=6
        )
    else:
        with pytest.raises(UnsupportedFeatureError, match="cannot stream"):
            runner.stream("The sky is")


@pytest.mark.parametrize("schema", SCALAR_SCHEMAS, ids=lambda s: s.__name__)
def test_typed_batch_keeps_order(runner: ModelRunner, schema: type[Type]) -> None:
    batch = runner(QUESTIONS, output_type=schema, max_new_tokens=96)
    singles = [runner(q, output_type=schema, max_new_tokens=96) for q in QUESTIONS]
    assert [type(r) for r in batch] == [schema] * len(QUESTIONS)
    assert batch == singles


def test_text_batch_keeps_order(runner: ModelRunner) -> None:
    prompts = ["The sky is", "Once upon a time", "1, 2, 3,"]
    batch = runner(prompts, max_new_tokens=8)
    assert batch == [runner(p, max_new_tokens=8) for p in prompts]
    assert all(isinstance(t, str) for t in batch)


def test_non_type_output_type_fails_the_same_way(runner: ModelRunner) -> None:
    with pytest.raises(SchemaError, match=r"output_type must be a subclass of llmrun\.Type"):
        runner("x", output_type=dict)  # type: ignore[call-overload]


def test_empty_batch_fails_the_same_way(runner: ModelRunner) -> None:
    with pytest.raises(InvalidInputError, match="prompt list is empty"):
        runner([])


def test_bad_generation_option_fails_the_same_way(runner: ModelRunner) -> None:
    with pytest.raises(InvalidInputError, match="top_p"):
        runner("x", top_p=2.0)


async def test_agenerate_typed(runner: ModelRunner) -> None:
    schema = SCALAR_SCHEMAS[0]
    result = await runner.agenerate(QUESTIONS[0], output_type=schema, max_new_tokens=96)
    assert result == runner(QUESTIONS[0], output_type=schema, max_new_tokens=96)
