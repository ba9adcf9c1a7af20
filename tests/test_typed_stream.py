"""Typed streaming: stream(q, output_type=T) yields partial T objects, the last equal to generate()'s."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

import llmrun
from llmrun import Context, Type
from llmrun.errors import OutputValidationError
from llmrun.runner import OutputSpec
from llmrun.streaming import partial_instance, typed_stream
from llmrun.testing import FakeRunner, FunctionRunner, stream_script
from llmrun.testing.lamini_server import FakeLaminiServer


class Source(Type):
    title: str = Context("the title of the source")
    year: int = Context("the year it was published")


class Answer(Type):
    answer: str = Context("a short factual answer")
    tags: list[str] = Context("keywords")
    sources: list[Source] = Context("where the answer comes from")
    confidence: float = Context("how sure the answer is, 0 to 1", ge=0, le=1)


FULL = {
    "answer": 'Paris, "the" city',
    "tags": ["capital", "France"],
    "sources": [{"title": "Atlas", "year": 1999}],
    "confidence": 0.75,
}
TEXT = json.dumps(FULL)


def scripted(size: int) -> FunctionRunner:
    return FunctionRunner(lambda p, r: TEXT, stream_function=lambda p, r: stream_script(TEXT, size=size))


@pytest.mark.parametrize("size", [1, 3, 7, 1000])
def test_fields_appear_as_they_close_and_lists_grow(size: int) -> None:
    runner = scripted(size)
    items = list(runner.stream("Q?", output_type=Answer))
    assert items[-1] == runner("Q?", output_type=Answer) == Answer.model_validate(FULL)
    partials = items[:-1]
    for item in items:
        assert isinstance(item, Answer)
        data = item.model_dump()  # only fields received so far
        for name in item.model_fields_set:
            if name == "answer":
                assert data["answer"] == FULL["answer"]  # a string is never shown half-written
            if name == "tags":
                assert data["tags"] == FULL["tags"][: len(data["tags"])]  # type: ignore[index]
            if name == "sources":  # nested objects fill in field by field
                for got, full in zip(data["sources"], FULL["sources"], strict=False):  # type: ignore[call-overload]
                    assert got.items() <= full.items()
    dumps = [p.model_dump() for p in partials]
    assert all(a != b for a, b in itertools.pairwise(dumps))  # a new item only when something closed
    if size == 1:
        tags = [p.tags for p in partials if "tags" in p.model_fields_set]
        assert [] in tags  # the list grew one finished item at a time
        assert ["capital"] in tags
        sources = [p.sources for p in partials if "sources" in p.model_fields_set and p.sources]
        assert isinstance(sources[0][0], Source)
        assert {"title": "Atlas"} in [s[0].model_dump() for s in sources]  # nested fields fill in too
        assert all("confidence" not in p.model_fields_set for p in partials)  # a number waits for `}`
        orders = [len(p.model_fields_set) for p in partials]
        assert orders == sorted(orders)
    if size == 1000:
        assert len(items) == 1  # everything arrived at once: just the validated object


def test_partials_are_unvalidated_model_construct_objects() -> None:
    partial = partial_instance(Answer, {"answer": "x", "sources": [{"title": "t"}]})
    assert partial.model_fields_set == {"answer", "sources"}
    assert partial.sources[0].model_fields_set == {"title"}
    with pytest.raises(AttributeError):
        _ = partial.confidence


def test_invalid_final_output_raises_from_the_stream() -> None:
    bad = json.dumps({**FULL, "confidence": 7})
    runner = FunctionRunner(lambda p, r: bad)
    items: list[object] = []
    with pytest.raises(OutputValidationError, match="confidence"):
        items.extend(runner.stream("Q?", output_type=Answer))
    assert items  # the partials came first


def test_closing_the_typed_stream_closes_the_backend_stream() -> None:
    closed: list[bool] = []

    def deltas() -> Iterator[str]:
        try:
            yield from stream_script(TEXT, size=2)  # type: ignore[misc]
        finally:
            closed.append(True)

    stream = typed_stream(deltas(), OutputSpec.for_type(Answer))
    next(stream)
    stream.close()
    assert closed == [True]


def test_raw_schema_outputs_stream_partial_json_values() -> None:
    spec = OutputSpec.for_schema({"type": "object", "properties": {"a": {"type": "array"}}}, name="thing")
    items = list(typed_stream(iter(['{"a": [1', ", 2", "]}"]), spec))
    assert items == [{"a": []}, {"a": [1]}, {"a": [1, 2]}]  # the 2 waits for its `]`


def test_fake_runner_streams_typed() -> None:
    runner = FakeRunner(seed=4)
    items = list(runner.stream("Q?", output_type=Answer))
    assert len(items) > 1
    assert items[-1] == FakeRunner(seed=4)("Q?", output_type=Answer)


def test_text_streams_are_unchanged() -> None:
    runner = FunctionRunner(lambda p, r: "plain text", chunk_size=3)
    assert list(runner.stream("p")) == ["pla", "in ", "tex", "t"]


async def test_astream_text_and_typed() -> None:
    runner = scripted(4)
    assert "".join([piece async for piece in runner.astream("p")]) == TEXT
    items = [item async for item in runner.astream("Q?", output_type=Answer)]
    assert len(items) > 2
    assert items[-1] == Answer.model_validate(FULL)


async def test_astream_stops_early_and_checks_input_at_call_time() -> None:
    closed: list[bool] = []

    def stream(prompt: str, request: object) -> Iterator[str]:
        try:
            yield from ["a", "b", "c"]
        finally:
            closed.append(True)

    runner = FunctionRunner(stream_function=stream)
    pieces = runner.astream("p")
    async for piece in pieces:
        assert piece == "a"
        break
    await pieces.aclose()  # what `async with contextlib.aclosing(runner.astream(...))` does
    assert closed == [True]  # leaving early closed the backend's stream
    from llmrun.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="one prompt"):
        runner.astream(["a", "b"])  # type: ignore[call-overload]


def test_lamini_typed_stream_through_the_fake_server() -> None:
    pytest.importorskip("lamini", reason="the lamini backend needs the optional lamini client")

    class Place(Type):
        city: str = Context("the city")
        population: int = Context("how many people live there")

    with FakeLaminiServer(api_key="sk-stream-key") as server:
        runner = llmrun.load("m", backend="lamini", api_key="sk-stream-key", api_url=server.url)
        items = list(runner.stream("Where?", output_type=Place))
        assert items[-1] == runner("Where?", output_type=Place)
        assert isinstance(items[-1], Place)

        async def collect() -> list[Place]:
            return [item async for item in runner.astream("Where?", output_type=Place)]

        assert asyncio.run(collect()) == items  # Lamini's reply comes whole: one, final object


class Short(Type):
    word: str = Context("one word")
    count: int = Context("a small number", ge=0, le=9)


@pytest.mark.slow
def test_local_typed_stream_equals_generate(tiny_checkpoint_dirs: dict[str, Path]) -> None:
    runner = llmrun.load(str(tiny_checkpoint_dirs["gpt_neox"]), backend="local", device="cpu")
    items = list(runner.stream("Q: name a word", output_type=Short, max_new_tokens=48))
    assert items[-1] == runner("Q: name a word", output_type=Short, max_new_tokens=48)
    assert all(isinstance(item, Short) for item in items)
    assert len(items) > 1, items  # the grammar keeps prefixes valid JSON: partials came before the end
