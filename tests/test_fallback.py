"""FallbackRunner: the next runner on named errors (cloud 5xx or timeout, then local), nothing else."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import llmrun
from llmrun import Context, FallbackRunner, Type
from llmrun.errors import (
    AuthenticationError,
    BatchError,
    InvalidInputError,
    RequestTimeoutError,
    ServiceUnavailableError,
    UnsupportedFeatureError,
)
from llmrun.runner import Capabilities, Completion, CompletionRequest
from llmrun.testing import FakeRunner, FunctionRunner, stream_script
from llmrun.testing.lamini_server import FakeLaminiServer


class Answer(Type):
    answer: str = Context("a short factual answer")


def failing(error: BaseException) -> FunctionRunner:
    def fail(prompt: str, request: CompletionRequest) -> str:
        raise error

    return FunctionRunner(fail, stream_function=lambda p, r: [error])


def test_moves_on_for_named_errors_and_says_who_answered() -> None:
    backup = FakeRunner(responses=[" from backup"])
    primary = failing(ServiceUnavailableError("503"))
    runner = FallbackRunner([primary, backup])
    assert runner("q") == " from backup"
    assert runner.last_runner is backup
    assert len(primary.requests) == 1


def test_other_errors_are_raised_at_once() -> None:
    backup = FakeRunner()
    runner = FallbackRunner([failing(AuthenticationError("bad key", 401)), backup])
    with pytest.raises(AuthenticationError):
        runner("q")
    assert backup.requests == []


def test_when_all_fail_the_last_error_is_raised_with_notes_of_the_others() -> None:
    runner = FallbackRunner(
        [failing(ServiceUnavailableError("first down")), failing(RequestTimeoutError("second slow"))],
        on=(ServiceUnavailableError, RequestTimeoutError),
    )
    with pytest.raises(RequestTimeoutError, match="second slow") as caught:
        runner("q")
    assert any("first down" in note for note in caught.value.__notes__)


def test_a_batch_whose_failures_are_all_named_moves_on() -> None:
    batch_error = BatchError("2 of 2 failed", {0: ServiceUnavailableError("a"), 1: RequestTimeoutError("b")})
    runner = FallbackRunner([failing(batch_error), FakeRunner(responses=["x", "y"])])
    assert runner(["a", "b"]) == ["x", "y"]
    mixed = BatchError("mixed", {0: ServiceUnavailableError("a"), 1: AuthenticationError("b")})
    with pytest.raises(BatchError):
        FallbackRunner([failing(mixed), FakeRunner()])(["a", "b"])


class PartlyDown(FunctionRunner):
    """Answers every prompt but those containing "down", which fail with a 503 in a BatchError."""

    def complete(self, request: CompletionRequest) -> list[Completion]:
        self.requests.append(request)
        failures: dict[int, BaseException] = {
            i: ServiceUnavailableError("503") for i, p in enumerate(request.prompts) if "down" in p
        }
        results = [None if i in failures else Completion(f"cloud {p}") for i, p in enumerate(request.prompts)]
        if failures:
            raise BatchError.of(failures, results)
        return [c for c in results if c is not None]

    async def acomplete(self, request: CompletionRequest) -> list[Completion]:
        return self.complete(request)


def test_a_batch_keeps_its_good_items_and_sends_only_the_failed_ones_on() -> None:
    cloud, local = PartlyDown(lambda p, r: ""), FunctionRunner(lambda p, r: f"local {p}")
    runner = FallbackRunner([cloud, local])
    assert runner(["a", "down b", "c", "down d"]) == ["cloud a", "local down b", "cloud c", "local down d"]
    assert local.requests[0].prompts == ("down b", "down d")
    assert runner.last_runner is local


async def test_async_batch_keeps_its_good_items_too() -> None:
    local = FunctionRunner(lambda p, r: f"local {p}")
    runner = FallbackRunner([PartlyDown(lambda p, r: ""), local])
    assert await runner.agenerate(["down a", "b"]) == ["local down a", "cloud b"]


def test_when_the_next_runner_fails_the_rest_the_good_items_are_still_kept() -> None:
    runner = FallbackRunner([PartlyDown(lambda p, r: ""), failing(RequestTimeoutError("slow"))])
    with pytest.raises(BatchError) as caught:
        runner(["a", "down b", "c"])
    assert caught.value.failed == [1]
    assert isinstance(caught.value.failures[1], RequestTimeoutError)
    assert caught.value.results == ["cloud a", None, "cloud c"]
    chained = FallbackRunner([PartlyDown(lambda p, r: ""), PartlyDown(lambda p, r: "")])
    with pytest.raises(BatchError) as caught:
        chained(["a", "down b", "down c"])
    assert caught.value.failed == [1, 2]
    assert str(caught.value.failures[2]).startswith("item 2:")  # numbered in the caller's batch


async def test_async_falls_back_too() -> None:
    runner = FallbackRunner([failing(ServiceUnavailableError("503")), FakeRunner(responses=["ok"])])
    assert await runner.agenerate("q") == "ok"


def test_stream_falls_back_before_the_first_chunk_only() -> None:
    runner = FallbackRunner([failing(ServiceUnavailableError("503")), FunctionRunner(lambda p, r: "abc")])
    assert "".join(runner.stream("q")) == "abc"
    late = FunctionRunner(stream_function=lambda p, r: stream_script("abcdef", size=2, fail_at=1))
    runner = FallbackRunner([late, FunctionRunner(lambda p, r: "never")])
    got: list[str] = []
    with pytest.raises(ServiceUnavailableError):
        got.extend(runner.stream("q"))
    assert got == ["ab"]


def test_stream_needs_a_runner_that_streams() -> None:
    class Mute(FunctionRunner):
        capabilities = Capabilities()  # cannot stream

    runner = FallbackRunner([Mute(lambda p, r: "x")])
    assert runner.capabilities.streams is False
    with pytest.raises(UnsupportedFeatureError, match="cannot stream"):
        list(runner.stream("q"))


def test_typed_output_and_sampling_options_every_runner_honours() -> None:
    runner = FallbackRunner([failing(RequestTimeoutError("slow")), FakeRunner()])
    assert isinstance(runner("q", output_type=Answer), Answer)
    assert runner.model_name == "function-model"
    cloud_like = FunctionRunner(lambda p, r: "x")
    cloud_like.capabilities = Capabilities(streams=True, sampling=frozenset({"stop", "seed"}))  # type: ignore[misc]
    assert FallbackRunner([cloud_like, FakeRunner()]).capabilities.sampling == {"stop", "seed"}


def test_bad_arguments_are_clear() -> None:
    with pytest.raises(InvalidInputError, match="non-empty list of runners"):
        FallbackRunner([])
    with pytest.raises(InvalidInputError, match="runner 1 is a str"):
        FallbackRunner([FakeRunner(), "local"])  # type: ignore[list-item]
    with pytest.raises(InvalidInputError, match="exception class or a list"):
        FallbackRunner([FakeRunner()], on="ServiceUnavailableError")  # type: ignore[arg-type]


@pytest.fixture
def lamini_server() -> Iterator[FakeLaminiServer]:
    pytest.importorskip("lamini", reason="the lamini backend needs the optional lamini client")
    with FakeLaminiServer(api_key="sk-fallback-key") as server:
        yield server


def test_cloud_5xx_then_the_local_stand_in(lamini_server: FakeLaminiServer) -> None:
    cloud = llmrun.load(
        "m",
        backend="lamini",
        api_key="sk-fallback-key",
        api_url=lamini_server.url,
        max_retries=1,
        backoff_base=0,
    )
    local = FakeRunner(responses=[" local answer"])
    runner = FallbackRunner([cloud, local])
    lamini_server.fail(503, "overloaded", times=2)  # the first try and its one retry
    assert runner("Q: hi? A:") == " local answer"
    assert runner.last_runner is local
    assert len(lamini_server.requests_to("/v1/completions")) == 2
    lamini_server.script("Q: again", " cloud answer")
    assert runner("Q: again") == " cloud answer"
    assert runner.last_runner is cloud


def test_cloud_batch_with_one_chunk_down_sends_only_that_chunk_local(lamini_server: FakeLaminiServer) -> None:
    cloud = llmrun.load(
        "m",
        backend="lamini",
        api_key="sk-fallback-key",
        api_url=lamini_server.url,
        max_retries=0,
        batch_size=1,
        max_concurrency=1,
    )
    local = FunctionRunner(lambda p, r: f" local {p}")
    lamini_server.script("Q1", " cloud 1")
    lamini_server.fail(503, "overloaded", times=1)  # the first chunk (prompt Q0) only
    assert FallbackRunner([cloud, local])(["Q0", "Q1"]) == [" local Q0", " cloud 1"]
    assert local.requests[0].prompts == ("Q0",)
