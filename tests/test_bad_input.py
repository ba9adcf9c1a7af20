"""Bad input found by probing: each one is a clear llmrun error, raised early, never a stray exception."""

from __future__ import annotations

import math

import pytest

from llmrun import Context, GenerationConfig, Type
from llmrun.errors import InvalidInputError, SchemaError
from llmrun.testing import FakeRunner


class Node(Type):
    name: str = Context("the node's name")
    children: list[Node] = Context("the node's children")


class Pong(Type):
    ping: Ping | None = Context("the other half")


class Ping(Type):
    pong: Pong | None = Context("the other half")


Pong.model_rebuild()


@pytest.mark.parametrize("output_type", [Node, Ping])
def test_recursive_output_type_is_a_schema_error(output_type: type[Type]) -> None:
    runner = FakeRunner()
    with pytest.raises(SchemaError, match=rf"{output_type.__name__} is recursive.*refers back to"):
        runner("a tree, please", output_type=output_type)
    with pytest.raises(SchemaError, match="is recursive"):
        list(runner.stream("a tree, please", output_type=output_type))


def test_recursive_type_still_works_as_an_input() -> None:
    tree = Node(name="root", children=[Node(name="leaf", children=[])])
    assert isinstance(FakeRunner()(tree), str)


@pytest.mark.parametrize("name", ["temperature", "repetition_penalty", "top_p"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_sampling_numbers(name: str, value: float) -> None:
    with pytest.raises(InvalidInputError, match=rf"{name}=(nan|inf|-inf) is invalid.*finite"):
        GenerationConfig(**{name: value})  # type: ignore[arg-type]


@pytest.mark.parametrize("stop", [5, 5.0, [5], b"end", {"a": 1}])
def test_stop_must_be_strings(stop: object) -> None:
    with pytest.raises(InvalidInputError, match=r"stop=.* is invalid: .*string"):
        GenerationConfig(stop=stop)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="stop"):
        FakeRunner()("hi", stop=stop)


@pytest.mark.parametrize("seed", [2**70, 2**64, -(2**63) - 1])
def test_seed_is_bounded_to_what_torch_takes(seed: int) -> None:
    with pytest.raises(InvalidInputError, match=r"seed=.* is invalid: .*2\*\*64"):
        GenerationConfig(seed=seed)


def test_seed_bounds_are_the_generators() -> None:
    torch = pytest.importorskip("torch", reason="checks the bound against torch itself")
    for seed in (2**64 - 1, -(2**63), 0):
        GenerationConfig(seed=seed)
        torch.Generator().manual_seed(seed)  # the extremes the check lets through, torch takes


def test_lone_surrogate_in_a_prompt() -> None:
    runner = FakeRunner()
    with pytest.raises(InvalidInputError, match=r"prompt 1 .*lone surrogate.*position 3"):
        runner(["fine", "abc\ud800def"])


def test_lone_surrogate_in_a_type_field() -> None:
    class Question(Type):
        question: str = Context("a question")

    with pytest.raises(InvalidInputError, match=r"prompt 0 .*lone surrogate"):
        FakeRunner()(Question(question="bad \udfff"))


@pytest.mark.parametrize("pattern", ["(", "[a-", "a{2,1}"])
def test_bad_pattern_is_a_schema_error(pattern: str) -> None:
    with pytest.raises(SchemaError, match=r"pattern=.* is not a valid regular expression"):
        Context("a code", pattern=pattern)


@pytest.mark.parametrize(
    ("constraints", "expected"),
    [
        ({"ge": 10, "le": 1}, "ge=10 and le=1"),
        ({"gt": 5, "lt": 5}, "gt=5 and lt=5"),
        ({"ge": 3, "lt": 3}, "ge=3 and lt=3"),
        ({"min_length": 5, "max_length": 2}, "min_length=5 and max_length=2"),
    ],
)
def test_contradictory_bounds_name_the_field(constraints: dict[str, int], expected: str) -> None:
    kind = str if "min_length" in constraints else int
    with pytest.raises(SchemaError, match=rf"Score\.value: {expected} leave no value"):

        class Score(Type):
            value: kind = Context("a value", **constraints)  # type: ignore[valid-type]


class Outer(Type):
    inner: Inner | None = Context("defined further down")


class Inner(Type):
    size: int = Context("a size", ge=0)


def test_forward_reference_is_checked_once_resolved() -> None:
    result = FakeRunner()("x", output_type=Outer)  # resolved from the module when first used
    assert isinstance(result, Outer)

    class Holder(Type):
        item: Missing | None = Context("a class that never gets defined")  # type: ignore[name-defined]  # noqa: F821

    with pytest.raises(SchemaError, match=r"Holder refers to a class that is not defined.*model_rebuild"):
        FakeRunner()("x", output_type=Holder)
