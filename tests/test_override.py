"""llmrun.testing.override: what load, BasicModelRunner and LLMEngine build, swapped for a block or a test."""

from __future__ import annotations

import threading

import pytest

import llmrun
from llmrun import BasicModelRunner, LLMEngine
from llmrun.errors import BackendNotFoundError, InvalidInputError
from llmrun.runner import ModelRunner
from llmrun.testing import FakeRunner, RunnerSpec, override


def app_answer(question: str) -> str:
    """Application code: it builds its own runner, as real code does."""
    runner = llmrun.load("EleutherAI/pythia-70m", backend="lamini", api_key="never-used")
    return runner(question)


def test_override_swaps_load_for_the_block_then_restores() -> None:
    fake = FakeRunner(responses=[" Paris"])
    with override(fake):
        assert app_answer("Q: capital of France? A:") == " Paris"
        assert llmrun.load("x", backend="local") is fake
    assert fake.last_request is not None
    assert fake.last_request.prompts == ("Q: capital of France? A:",)
    assert isinstance(llmrun.load("m", backend="fake"), FakeRunner)
    assert llmrun.load("m", backend="fake") is not fake


def test_override_reaches_the_2023_facades() -> None:
    fake = FakeRunner(responses=["one", "two"])
    with override(fake):
        assert BasicModelRunner("any/model", backend="lamini")("hi") == "one"
        assert LLMEngine(id="example_llm", backend="local")("hi") == "two"
    assert len(fake.requests) == 2


def test_a_runner_class_is_built_with_the_requested_model() -> None:
    with override(FakeRunner):
        runner = llmrun.load("meta-llama/Llama-2-7b-hf", backend="local", device="cuda")
    assert isinstance(runner, FakeRunner)
    assert runner.model_name == "meta-llama/Llama-2-7b-hf"


def test_factory_sees_the_spec_and_can_build_what_it_replaces() -> None:
    seen: list[RunnerSpec] = []

    def factory(spec: RunnerSpec) -> ModelRunner:
        seen.append(spec)
        return spec.build()

    with override(factory):
        runner = llmrun.load("some-model", backend="fake", seed=3)
    assert isinstance(runner, FakeRunner)
    assert runner.seed == 3
    assert seen[0].backend == "fake"
    assert seen[0].model == "some-model"
    assert seen[0].options == {"seed": 3}


def test_nested_overrides_innermost_wins_and_build_reaches_the_outer_one() -> None:
    outer, inner = FakeRunner(model_name="outer"), FakeRunner(model_name="inner")
    with override(outer):
        with override(inner):
            assert llmrun.load("m", backend="fake") is inner
        with override(lambda spec: spec.build()):
            assert llmrun.load("m", backend="fake") is outer
        assert llmrun.load("m", backend="fake") is outer


def test_backend_filter_leaves_other_backends_alone() -> None:
    fake = FakeRunner()
    with override(fake, backend="lamini"):
        assert llmrun.load("m", backend="lamini", api_key="k") is fake
        other = llmrun.load("m", backend="fake")
    assert other is not fake
    assert isinstance(other, FakeRunner)


def test_out_of_order_exit_removes_only_its_own_layer() -> None:
    a, b = FakeRunner(model_name="a"), FakeRunner(model_name="b")
    first, second = override(a), override(b)
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert llmrun.load("m", backend="fake") is b
    second.__exit__(None, None, None)
    assert llmrun.load("m", backend="fake") not in (a, b)


def test_restored_after_an_exception_and_usable_as_decorator() -> None:
    fake = FakeRunner()
    with pytest.raises(RuntimeError), override(fake):
        raise RuntimeError("boom")
    assert llmrun.load("m", backend="fake") is not fake

    @override(fake)
    def inside() -> ModelRunner:
        return llmrun.load("m", backend="fake")

    assert inside() is fake
    assert inside() is fake  # the decorator enters again on each call
    assert llmrun.load("m", backend="fake") is not fake


def test_applies_to_runners_built_in_other_threads() -> None:
    fake = FakeRunner()
    built: list[ModelRunner] = []
    with override(fake):
        thread = threading.Thread(
            target=lambda: built.append(llmrun.load("m", backend="lamini", api_key="k"))
        )
        thread.start()
        thread.join()
    assert built == [fake]


def test_unknown_backend_still_fails_without_an_override_and_is_swapped_with_one() -> None:
    with pytest.raises(BackendNotFoundError):
        llmrun.load("m", backend="nosuchbackend")
    fake = FakeRunner()
    with override(fake):
        assert llmrun.load("m", backend="nosuchbackend") is fake


def test_bad_targets_and_factories_are_clear_errors() -> None:
    with pytest.raises(InvalidInputError, match="ModelRunner instance, a ModelRunner subclass or a factory"):
        override("fake")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="backend must be a backend name"):
        override(FakeRunner(), backend="")
    with override(lambda spec: "not a runner"), pytest.raises(InvalidInputError, match="returned a str"):  # type: ignore[arg-type,return-value]
        llmrun.load("m", backend="fake")
    swap = override(FakeRunner())
    with swap, pytest.raises(InvalidInputError, match="already active"):
        swap.__enter__()


def test_pytest_fixture_lasts_for_the_test(llmrun_override) -> None:  # type: ignore[no-untyped-def]
    fake = FakeRunner(responses=[" yes"])
    llmrun_override(fake, backend="lamini")
    assert app_answer("Q?") == " yes"
