"""A failed item of a batch costs only itself: BatchError keeps the others and names the failed items."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import llmrun
from llmrun import Context, Type
from llmrun.backends.local import LocalRunner
from llmrun.errors import BatchError, GenerationError, OutputValidationError, PromptTooLongError
from llmrun.runner import RunResult
from llmrun.testing import FakeRunner


class Answer(Type):
    answer: str = Context("a short answer")


GOOD = Answer(answer="yes")


def test_one_invalid_typed_output_keeps_the_valid_ones() -> None:
    runner = FakeRunner(responses=[GOOD, '{"answer": 3', GOOD])
    with pytest.raises(BatchError, match=r"1 of 3 prompts failed \(items 1\)") as info:
        runner(["a", "b", "c"], output_type=Answer)
    assert info.value.results == [GOOD, None, GOOD]
    assert info.value.failed == [1]
    error = info.value.failures[1]
    assert isinstance(error, OutputValidationError)
    assert str(error).startswith("item 1: ")
    assert error.raw_text == '{"answer": 3'


def test_run_keeps_run_results() -> None:
    runner = FakeRunner(responses=["fine", GOOD, "not json"])
    with pytest.raises(BatchError) as info:
        runner.run(["a", "b", "c"], output_type=Answer)
    first, second, third = info.value.results
    assert first is None
    assert isinstance(second, RunResult)
    assert second.output == GOOD
    assert third is None
    assert info.value.failed == [0, 2]


def test_a_single_prompt_raises_its_own_error() -> None:
    with pytest.raises(OutputValidationError) as info:
        FakeRunner(responses=["not json"])("a", output_type=Answer)
    assert not str(info.value).startswith("item")


@pytest.fixture(scope="module")
def local(tiny_gpt_neox_dir: Path) -> LocalRunner:
    loaded = llmrun.load(str(tiny_gpt_neox_dir), backend="local", device="cpu", max_batch_size=2)
    assert isinstance(loaded, LocalRunner)
    return loaded


def test_local_a_failed_chunk_keeps_the_other_chunks(
    local: LocalRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompts = ["one", "two", "three", "four", "five"]
    expected = local(prompts, max_new_tokens=4)
    real = local.engine.generate_ids
    calls = {"n": 0}

    def second_chunk_fails(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise GenerationError("the grammar gave up")  # a forced failure of chunk 2 (items 2-3)
        return real(*args, **kwargs)

    monkeypatch.setattr(local.engine, "generate_ids", second_chunk_fails)
    with pytest.raises(BatchError, match=r"2 of 5 prompts failed \(items 2-3\)") as info:
        local(prompts, max_new_tokens=4)
    assert info.value.results == [expected[0], expected[1], None, None, expected[4]]
    assert str(info.value.failures[2]).startswith("items 2-3: the grammar gave up")


def test_local_a_prompt_that_does_not_fit_is_named_before_anything_runs(local: LocalRunner) -> None:
    with pytest.raises(PromptTooLongError, match=r"^item 1: the prompt has \d+ tokens"):
        local(["short", "word " * 2000], max_new_tokens=4)
