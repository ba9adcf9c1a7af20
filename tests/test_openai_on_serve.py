"""The openai backend against a real ``llmrun serve``: the two sides agree on the wire.

The conformance suite runs this pair too (``serve-llmrun``, ``serve-auto``); these tests check
what it does not: detection, the answers being the local engine's own, usage, stop and seed,
finish reasons, raw schemas, and the errors each bad request becomes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("openai")

import llmrun
from llmrun import Context, Type
from llmrun.backends.openai import OpenAIRunner
from llmrun.errors import (
    AuthenticationError,
    BadRequestError,
    InvalidInputError,
    ModelNotFoundError,
    RequestTimeoutError,
)
from llmrun.generation import GenerationConfig
from llmrun.runner import CompletionRequest, ModelRunner, OutputSpec

PROMPTS = ["The sky is", "Once upon a time", "1, 2, 3,"]


class City(Type):
    name: str = Context("the city's name")
    population: int = Context("how many live there", ge=0)
    capital: bool = Context("whether it is a capital")


CITY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "population": {"type": "integer", "minimum": 0},
        "kind": {"enum": ["town", "city"]},
    },
    "required": ["name", "population", "kind"],
    "additionalProperties": False,
}


def remote(serve: Any, **options: Any) -> OpenAIRunner:
    runner = llmrun.load(
        serve.model, backend="openai", base_url=serve.base_url, api_key=serve.api_key, **options
    )
    assert isinstance(runner, OpenAIRunner)
    return runner


@pytest.fixture(scope="module")
def local(tiny_gpt_neox_dir: Path) -> ModelRunner:
    """The checkpoint llmrun serve serves, in this process."""
    return llmrun.load(str(tiny_gpt_neox_dir), backend="local", device="cpu")


def test_auto_detects_llmrun_serve_from_owned_by(llmrun_serve: Any) -> None:
    runner = remote(llmrun_serve)
    assert runner.profile is None
    assert isinstance(runner("The sky is", max_new_tokens=3), str)
    assert runner.profile is not None
    assert runner.profile.name == "llmrun"


@pytest.mark.parametrize("profile", ["llmrun", "auto"])
def test_text_is_the_local_engines_own_with_its_usage(
    llmrun_serve: Any, local: ModelRunner, profile: str
) -> None:
    runner = remote(llmrun_serve, profile=profile)
    there = runner.run(PROMPTS, max_new_tokens=6)
    here = local.run(PROMPTS, max_new_tokens=6)
    assert [r.text for r in there] == [r.text for r in here]
    assert [r.usage for r in there] == [r.usage for r in here]
    assert [r.finish_reason for r in there] == [r.finish_reason for r in here]


def test_stop_and_budget_end_the_text_as_locally(llmrun_serve: Any, local: ModelRunner) -> None:
    runner = remote(llmrun_serve, profile="llmrun")
    whole = local("Once upon a time", max_new_tokens=12)
    stop = whole[len(whole) // 2 :][:2]  # text the answer goes on past
    assert whole.index(stop) > 0
    there = runner.run("Once upon a time", max_new_tokens=12, stop=[stop])
    here = local.run("Once upon a time", max_new_tokens=12, stop=[stop])
    assert there.text == here.text
    assert stop not in there.text
    assert there.finish_reason == here.finish_reason == "stop"
    assert "".join(runner.stream("Once upon a time", max_new_tokens=12, stop=[stop])) == there.text
    cut = runner.run("Once upon a time", max_new_tokens=2)
    assert cut.finish_reason == "length"
    assert cut.usage.completion_tokens == 2


@pytest.mark.parametrize(
    "sampling",
    [{"temperature": 1.5}, {"temperature": 0.8, "top_k": 5}, {"top_p": 0.9, "repetition_penalty": 1.3}],
    ids=["temperature", "top_k", "top_p-penalty"],
)
def test_seeded_sampling_is_the_local_engines_own(
    llmrun_serve: Any, local: ModelRunner, sampling: dict[str, Any]
) -> None:
    """Sampling settings and seed reach serve's sampler under the names it reads (one prompt: a
    local batch shares one random state, while each remote prompt is a request with its own)."""
    runner = remote(llmrun_serve, profile="llmrun")
    options = {"max_new_tokens": 12, "temperature": 1.0, **sampling}

    def sample(where: ModelRunner, seed: int) -> str:
        return where("Once upon a time", seed=seed, **options)

    assert sample(runner, 1) == sample(local, 1)
    assert len({sample(runner, s) for s in range(1, 5)}) > 1


def test_typed_answers_through_both_endpoints_and_streaming(llmrun_serve: Any) -> None:
    completions = remote(llmrun_serve, profile="llmrun")
    chat = remote(llmrun_serve, profile="llmrun", chat=True)
    city = completions("Describe a city.", output_type=City, max_new_tokens=64)
    assert type(city) is City
    assert city.population >= 0
    assert type(chat("Describe a city.", output_type=City, max_new_tokens=64)) is City
    streamed = list(completions.stream("Describe a city.", output_type=City, max_new_tokens=64))
    assert streamed[-1] == city


def test_a_raw_schema_is_one_for_schema_path_on_both_sides(llmrun_serve: Any) -> None:
    """``output_schema=``'s spec through the backend and ``response_format`` into serve: both are
    :meth:`OutputSpec.for_schema`, so the reply validates against the user's own schema."""
    runner = remote(llmrun_serve, profile="llmrun")
    spec = OutputSpec.for_schema(CITY_SCHEMA, name="City")
    request = CompletionRequest(("Describe a city as JSON.",), GenerationConfig(max_new_tokens=64), spec)
    (done,) = runner.complete(request)
    value = spec.parse(done.text)
    assert set(value) == {"name", "population", "kind"}
    assert value["kind"] in ("town", "city")
    assert len(value["name"]) <= 12


def test_a_budget_the_json_cannot_close_in_is_refused_before_any_call(
    llmrun_serve: Any, local: ModelRunner
) -> None:
    runner = remote(llmrun_serve, profile="llmrun")
    for where in (runner, local):  # the same bounds, the same message
        with pytest.raises(InvalidInputError, match="max_new_tokens=3 is too small for City"):
            where("Describe a city.", output_type=City, max_new_tokens=3)


def test_errors_name_what_to_change(llmrun_serve: Any) -> None:
    with pytest.raises(AuthenticationError, match="api_key"):
        llmrun.load(llmrun_serve.model, backend="openai", base_url=llmrun_serve.base_url, api_key="wrong")(
            "x", max_new_tokens=2
        )
    for profile in ("auto", "llmrun"):  # auto: from GET /v1/models; named: from the 404
        with pytest.raises(ModelNotFoundError, match="gpt-4"):
            llmrun.load(
                "gpt-4",
                backend="openai",
                base_url=llmrun_serve.base_url,
                api_key=llmrun_serve.api_key,
                profile=profile,
            )("x", max_new_tokens=2)
    with pytest.raises(BadRequestError, match="exceeds the model's context") as caught:
        remote(llmrun_serve, profile="llmrun")("word " * 5000, max_new_tokens=2)
    assert "truncate_prompt" not in str(caught.value)  # a local option, which no client can pass


@pytest.fixture(scope="module")
def spare_engine(tiny_gpt_neox_dir: Path) -> Any:
    """An engine for servers with settings of their own, started one at a time."""
    from llmrun.serve import ServeSettings
    from llmrun.serve.launch import load_engine

    return load_engine(str(tiny_gpt_neox_dir), ServeSettings(max_batch_size=2), device="cpu")


def serving(engine: Any, **settings: Any) -> Any:
    from llmrun.serve import ServeSettings, create_app
    from llmrun.serve.launch import BackgroundServer

    chosen = ServeSettings(port=0, max_batch_size=2, **settings)
    return BackgroundServer(create_app(engine, chosen, "tiny"), chosen)


def test_a_full_queue_is_waited_out_through_retry_after(
    spare_engine: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """serve's 429 + Retry-After and the backend's retrier: a batch bigger than the queue completes."""
    with serving(spare_engine, max_queue=2) as server:
        runner = llmrun.load("tiny", backend="openai", base_url=server.url + "/v1", profile="llmrun")
        with caplog.at_level("INFO", logger="llmrun.backends.http"):
            done = runner.run([f"prompt {i}" for i in range(5)], max_new_tokens=24)
    assert [r.usage.completion_tokens for r in done] == [24] * 5
    assert "RateLimitError" in caplog.text  # some were refused at first, then retried


def test_the_servers_timeout_is_a_timeout_streamed_or_not(spare_engine: Any) -> None:
    """A 504, and an error event in the middle of a stream, are both a RequestTimeoutError."""
    with serving(spare_engine, timeout_s=0.3) as server:
        runner = llmrun.load(
            "tiny", backend="openai", base_url=server.url + "/v1", profile="llmrun", max_retries=0
        )
        with pytest.raises(RequestTimeoutError, match="server's timeout"):
            runner("Once upon a time", max_new_tokens=400)
        with pytest.raises(RequestTimeoutError, match=r"mid-stream.*server.s timeout"):
            "".join(runner.stream("Once upon a time", max_new_tokens=400))


def test_closing_a_stream_cancels_the_row_on_the_server(llmrun_serve: Any) -> None:
    """The contract's "closing the iterator stops generation": the server sees the client go and
    cancels the row (its metrics count it) rather than decoding to the end of the budget."""
    import re
    import time

    import requests

    def cancelled() -> float:
        text = requests.get(
            llmrun_serve.base_url.removesuffix("/v1") + "/metrics",
            headers={"Authorization": f"Bearer {llmrun_serve.api_key}"},
            timeout=10,
        ).text
        found = re.findall(
            r'^llmrun_serve_cancelled_rows_total\{why="(?:disconnect|abandoned)"\} (\S+)$', text, re.M
        )
        return sum(float(v) for v in found)

    before = cancelled()
    stream = remote(llmrun_serve, profile="llmrun").stream("Once upon a time", max_new_tokens=400)
    assert next(stream)
    stream.close()
    deadline = time.monotonic() + 20
    while cancelled() == before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert cancelled() == before + 1


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"message": "too slow", "type": "timeout_error", "code": "timeout"}, RequestTimeoutError),  # serve
        ({"message": "bad", "type": "BadRequestError", "code": 400}, BadRequestError),  # vLLM
        ({"message": "?", "type": "mystery"}, None),  # neither says: the generic answer
    ],
)
def test_a_stream_error_event_keeps_its_kind(body: dict[str, Any], expected: type | None) -> None:
    import importlib

    import openai

    from llmrun.backends.openai import wire

    http = importlib.import_module(openai.DefaultHttpxClient.__mro__[1].__module__.split(".")[0])
    exc = openai.APIError(body["message"], http.Request("POST", "http://x/v1/completions"), body=body)
    ctx = wire.CallContext("http://x/v1", "m", "llmrun", "POST /completions")
    found = wire.stream_error(exc, ctx)
    assert (type(found) if found is not None else None) is expected
