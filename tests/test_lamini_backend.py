"""The Lamini backend against the fake Lamini server: keys, text, typed, batches, faults, secrecy."""

from __future__ import annotations

import asyncio
import enum
import importlib
import logging
import pickle
import random
import re
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytest

pytest.importorskip("lamini", reason="the lamini backend needs the optional lamini client")

import llmrun
from llmrun import BasicModelRunner, Context, LLMEngine, Type
from llmrun.backends.lamini import LaminiRunner
from llmrun.backends.lamini.transport import RetryPolicy
from llmrun.backends.lamini.wire_types import lamini_output_type, unflatten
from llmrun.errors import (
    AuthenticationError,
    BackendError,
    BadRequestError,
    BatchError,
    ConfigurationError,
    DependencyError,
    ModelNotFoundError,
    OutputValidationError,
    RateLimitError,
    RequestTimeoutError,
    ServiceUnavailableError,
    UnsupportedFeatureError,
)
from llmrun.testing.lamini_server import FakeLaminiServer, Fault
from llmrun.testing.lamini_wire import fake_text

KEY = "sk-test-0123456789abcdef"


class Question(Type):
    question: str = Context("a question about the world")


class Answer(Type):
    answer: str = Context("a short factual answer")
    confidence: float = Context("how sure the answer is, 0 to 1", ge=0, le=1)


class Place(Type):
    city: str = Context("the city")
    population: int = Context("how many people live there")


class Trip(Type):
    title: str = Context("a title")
    days: int | None = Context("how long, in days")
    to: Place = Context("where to")
    booked: bool = Context("whether it is booked")


class Color(enum.Enum):
    RED = "red"


class WithList(Type):
    tags: list[str] = Context("tags")


class WithLiteral(Type):
    kind: Literal["a", "b"] = Context("kind")


class WithEnum(Type):
    color: Color = Context("color")


class Deep(Type):
    trip: Trip = Context("a trip")
    extras: list[int] = Context("extras")


@pytest.fixture(scope="module")
def server() -> Iterator[FakeLaminiServer]:
    with FakeLaminiServer(api_key=KEY) as s:
        yield s


@pytest.fixture(autouse=True)
def _clean(server: FakeLaminiServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A clean server; no key or URL from this machine's environment, lamini module or home folder."""
    import lamini

    server.reset()
    server.latency_s = 0.0
    server.responder = None
    for name in ("LAMINI_API_KEY", "LAMINI_API_URL", "LLAMA_ENVIRONMENT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(lamini, "api_key", None)
    monkeypatch.setattr(lamini, "api_url", None)
    monkeypatch.setenv("HOME", str(tmp_path))


def make(server: FakeLaminiServer, **options: Any) -> LaminiRunner:
    options = {"backoff_base": 0.001, "backoff_max": 0.005, "timeout": 5.0, **options}
    return LaminiRunner("test-model", api_key=KEY, api_url=server.url, **options)


def completions(server: FakeLaminiServer) -> list[Any]:
    return server.requests_to("/v1/completions")


# ----------------------------------------------------------------------------- key and URL


def _write_yaml(home: Path, key: str, url: str) -> None:
    (home / ".lamini").mkdir(exist_ok=True)
    (home / ".lamini" / "configure.yaml").write_text(f"production:\n  key: {key}\n  url: {url}\n")


def test_explicit_args_beat_config_env_and_file(
    server: FakeLaminiServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LAMINI_API_KEY", "env-key")
    monkeypatch.setenv("LAMINI_API_URL", "http://127.0.0.1:9")
    _write_yaml(tmp_path, "file-key", "http://127.0.0.1:9")
    runner = LaminiRunner(
        "m", api_key=KEY, api_url=server.url, config={"production.key": "cfg", "production.url": "http://x:1"}
    )
    assert runner("hi") == fake_text("hi")
    assert completions(server)[0].header("Authorization") == f"Bearer {KEY}"


@pytest.mark.parametrize("form", ["dotted", "nested"])
def test_2023_config_forms(server: FakeLaminiServer, monkeypatch: pytest.MonkeyPatch, form: str) -> None:
    monkeypatch.setenv("LAMINI_API_KEY", "env-key-loses")
    config: dict[str, Any] = (
        {"production.key": KEY, "production.url": server.url}
        if form == "dotted"
        else {"production": {"key": KEY, "url": server.url}}
    )
    assert LaminiRunner("m", config=config)("hi") == fake_text("hi")


def test_env_vars(server: FakeLaminiServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _write_yaml(tmp_path, "file-key-loses", "http://127.0.0.1:9")
    for name, value in {**server.env(), "LAMINI_API_KEY": KEY}.items():
        monkeypatch.setenv(name, value)
    assert LaminiRunner("m")("hi") == fake_text("hi")


def test_lamini_configure_yaml(server: FakeLaminiServer, tmp_path: Path) -> None:
    _write_yaml(tmp_path, KEY, server.url)
    runner = LaminiRunner("m")
    assert runner.api_url == server.url
    assert runner("hi") == fake_text("hi")


def test_missing_key_fails_before_any_request(server: FakeLaminiServer) -> None:
    with pytest.raises(ConfigurationError, match="no Lamini API key found") as info:
        LaminiRunner("m", api_url=server.url)
    assert "LAMINI_API_KEY" in str(info.value)
    assert "configure.yaml" in str(info.value)
    assert server.requests == []


def test_default_url_is_lamini_cloud() -> None:
    assert LaminiRunner("m", api_key=KEY).api_url == "https://api.lamini.ai"


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"api_url": "ftp://x"}, "must start with http"),
        ({"config": ["production.key"]}, "config must be a dict"),
        ({"config": {"production": "k"}}, "config\\['production'\\]"),
        ({"api_key": "   "}, "non-empty string"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": float("nan")}, "timeout"),
        ({"max_retries": -1}, "max_retries"),
        ({"batch_size": 0}, "batch_size"),
        ({"max_concurrency": 1.5}, "max_concurrency"),
        ({"backoff_base": -1}, "backoff_base"),
    ],
)
def test_bad_settings_are_configuration_errors(kwargs: dict[str, Any], needle: str) -> None:
    kwargs = {"api_key": KEY, **kwargs}
    with pytest.raises(ConfigurationError, match=needle):
        LaminiRunner("m", **kwargs)


# ----------------------------------------------------------------------------- the key stays secret


def _plain_values(obj: object, depth: int = 4) -> Iterator[str]:
    """repr of every attribute reachable through ``__dict__`` (a Secret's slot is not one)."""
    yield repr(obj)
    if depth and hasattr(obj, "__dict__"):
        for value in vars(obj).values():
            yield from _plain_values(value, depth - 1)


def test_key_not_in_repr_attributes_or_pickle(server: FakeLaminiServer) -> None:
    runner = make(server)
    assert KEY not in str(runner)
    assert all(KEY not in text for text in _plain_values(runner))
    assert runner._transport.credentials.key.reveal() == KEY
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(runner._transport.credentials.key)


def _all_text(err: BaseException) -> str:
    return "".join(traceback.format_exception(err)) + repr(err) + repr(vars(err))


@pytest.mark.parametrize("status", [400, 401, 429, 503])
def test_key_not_in_errors_or_logs(
    server: FakeLaminiServer, caplog: pytest.LogCaptureFixture, status: int
) -> None:
    caplog.set_level(logging.DEBUG)
    server.fail(status, f"bad key {KEY} echoed back", times=10)
    with pytest.raises(BackendError) as info:
        make(server, max_retries=1)("hi")
    assert "***" in str(info.value)
    assert KEY not in _all_text(info.value)
    assert KEY not in caplog.text
    assert all(KEY not in str(r.args) for r in caplog.records)


def test_wrong_key_error_does_not_show_either_key(server: FakeLaminiServer) -> None:
    wrong = "-".join(["sk", "wrong", "key", "777"])  # not spelled out: tracebacks quote source lines
    with pytest.raises(AuthenticationError) as info:
        LaminiRunner("m", api_key=wrong, api_url=server.url)("hi")
    assert wrong not in _all_text(info.value)
    assert KEY not in _all_text(info.value)


# ----------------------------------------------------------------------------- text


def test_text_request_wire_format(server: FakeLaminiServer) -> None:
    assert make(server)("The sky is") == fake_text("The sky is", 128)
    (req,) = completions(server)
    assert req.body["model_name"] == "test-model"
    assert req.body["prompt"] == "The sky is"
    assert req.body["max_new_tokens"] == 128
    assert req.body.get("output_type") is None
    assert req.header("Lamini-Version")


@pytest.mark.parametrize("prompt", ["one", ["a", "b"]])
@pytest.mark.parametrize("output_type", [None, {"answer": "str", "n": "int"}])
def test_request_body_matches_the_lamini_client(prompt: Any, output_type: Any) -> None:
    from lamini.api.utils.completion import Completion

    from llmrun.backends.lamini.runner import completion_body

    theirs = Completion("k", "http://x").make_llm_req_map(
        model_name="m", prompt=prompt, output_type=output_type, max_new_tokens=9
    )
    assert completion_body("m", prompt, output_type, 9) == theirs


def test_max_new_tokens_and_stop(server: FakeLaminiServer) -> None:
    server.script("p", "one two. three")
    assert make(server)("p", max_new_tokens=7, stop=["."]) == "one two"
    assert completions(server)[0].body["max_new_tokens"] == 7


def test_batch_is_chunked_and_keeps_order(server: FakeLaminiServer) -> None:
    prompts = [f"p{i}" for i in range(10)]
    server.responder = lambda prompt, ot: prompt.replace("p", "r")
    assert make(server, batch_size=3)(prompts) == [f"r{i}" for i in range(10)]
    sizes = sorted(
        len(r.body["prompt"]) if isinstance(r.body["prompt"], list) else 1 for r in completions(server)
    )
    assert sizes == [1, 3, 3, 3]


def test_concurrency_is_bounded(server: FakeLaminiServer) -> None:
    server.latency_s = 0.1
    start = time.monotonic()
    make(server, batch_size=1, max_concurrency=2)([f"p{i}" for i in range(6)])
    assert server.peak_concurrency == 2
    assert time.monotonic() - start >= 0.3  # 6 requests, 2 at a time, 0.1 s each


@pytest.mark.parametrize(
    "option", [{"temperature": 0.7}, {"top_p": 0.9}, {"top_k": 5}, {"repetition_penalty": 1.2}]
)
def test_sampling_settings_lamini_cannot_honour(server: FakeLaminiServer, option: dict[str, Any]) -> None:
    with pytest.raises(UnsupportedFeatureError, match=next(iter(option))):
        make(server)("hi", **option)
    assert server.requests == []


def test_stream_yields_the_whole_text(server: FakeLaminiServer) -> None:
    runner = make(server)
    assert list(runner.stream("hi")) == [runner("hi")]


async def test_agenerate_runs_concurrently(server: FakeLaminiServer) -> None:
    server.latency_s = 0.2
    runner = make(server)
    a, b = await asyncio.gather(runner.agenerate("a"), runner.agenerate(["b", "c"]))
    assert (a, b) == (fake_text("a", 128), [fake_text("b", 128), fake_text("c", 128)])
    assert server.peak_concurrency == 2  # the event loop was not blocked by the first call


async def test_sync_call_inside_a_running_loop(server: FakeLaminiServer) -> None:
    assert make(server)("hi") == fake_text("hi", 128)


# ----------------------------------------------------------------------------- typed


def test_typed_call_sends_output_type_and_validates(server: FakeLaminiServer) -> None:
    result = make(server)(Question(question="Highest mountain?"), output_type=Answer)
    assert type(result) is Answer
    assert 0 <= result.confidence <= 1
    body = completions(server)[0].body
    assert body["output_type"] == {"answer": "str", "confidence": "float"}
    assert body["prompt"].startswith("question (a question about the world): Highest mountain?")
    assert body["max_new_tokens"] == 256


def test_nested_and_optional_fields_round_trip(server: FakeLaminiServer) -> None:
    assert lamini_output_type(Trip) == {
        "title": "str",
        "days": "int",
        "to.city": "str",
        "to.population": "int",
        "booked": "bool",
    }
    reply = {"title": "T", "days": 3, "to.city": "Oslo", "to.population": 700000, "booked": True}
    server.responder = lambda prompt, output_type: reply if prompt.startswith("go") else None
    trip = make(server)("go", output_type=Trip)
    assert trip == Trip(title="T", days=3, to=Place(city="Oslo", population=700000), booked=True)
    batch = make(server)(["x", "y"], output_type=Trip)
    assert [type(t.to) for t in batch] == [Place, Place]


def test_unflatten() -> None:
    assert unflatten({"a.b.c": 1, "a.d": 2, "e": 3}) == {"a": {"b": {"c": 1}, "d": 2}, "e": 3}
    assert unflatten({"a": 1, "a.b": 2}) == {"a": 1, "a.b": 2}  # contradictory: left for validation


@pytest.mark.parametrize(
    ("schema", "field", "kind"),
    [(WithList, "WithList.tags", "a list"), (WithLiteral, "WithLiteral.kind", "a literal"),
     (WithEnum, "WithEnum.color", "an enum"), (Deep, "Deep.extras", "a list")],
)  # fmt: skip
def test_inexpressible_fields_fail_before_the_call(
    server: FakeLaminiServer, schema: type[Type], field: str, kind: str
) -> None:
    with pytest.raises(UnsupportedFeatureError) as info:
        make(server)("q", output_type=schema)
    assert f"{field} is {kind}" in str(info.value)
    assert "local backend" in str(info.value)
    assert server.requests == []


def test_reply_of_wrong_type_is_output_validation_error(server: FakeLaminiServer) -> None:
    server.responder = lambda prompt, output_type: {"answer": "x", "confidence": "very"}
    with pytest.raises(OutputValidationError, match="confidence") as info:
        make(server)("q", output_type=Answer)
    assert '"very"' in info.value.raw_text


def test_reply_breaking_a_constraint_is_output_validation_error(server: FakeLaminiServer) -> None:
    server.responder = lambda prompt, output_type: {"answer": "x", "confidence": 5.0}
    with pytest.raises(OutputValidationError, match="less than or equal to 1"):
        make(server)("q", output_type=Answer)


def test_text_reply_of_wrong_shape_is_backend_error(server: FakeLaminiServer) -> None:
    server.script("q", {"not_output": 1})
    with pytest.raises(BackendError, match=re.escape('expected {"output"')):
        make(server)("q")


# ----------------------------------------------------------------------------- faults


def test_401_is_authentication_error_without_retry(server: FakeLaminiServer) -> None:
    server.fail(401, "Invalid API key")
    with pytest.raises(AuthenticationError) as info:
        make(server)("hi")
    assert (info.value.status_code, info.value.detail) == (401, "Invalid API key")
    assert len(completions(server)) == 1


def test_429_then_200_succeeds_after_retry_after(server: FakeLaminiServer) -> None:
    server.fail(429, "slow down", retry_after=0.3)
    start = time.monotonic()
    assert make(server)("hi") == fake_text("hi", 128)
    assert time.monotonic() - start >= 0.3
    assert len(completions(server)) == 2


def test_429_until_retries_run_out(server: FakeLaminiServer) -> None:
    server.fail(429, "slow down", times=10)
    with pytest.raises(RateLimitError, match="gave up after 3 attempts") as info:
        make(server, max_retries=2)("hi")
    assert info.value.detail == "slow down"
    assert len(completions(server)) == 3


def test_retry_after_longer_than_allowed_stops_at_once(server: FakeLaminiServer) -> None:
    server.fail(429, "come back tomorrow", retry_after=86400, times=5)
    with pytest.raises(RateLimitError, match="asked to wait 86400s"):
        make(server, max_retry_wait=10)("hi")
    assert len(completions(server)) == 1


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_is_retried(server: FakeLaminiServer, status: int) -> None:
    server.fail(status, "hiccup", times=2)
    assert make(server)("hi") == fake_text("hi", 128)
    assert len(completions(server)) == 3


def test_5xx_until_retries_run_out_is_service_unavailable(server: FakeLaminiServer) -> None:
    server.fail(503, "down for maintenance", times=10)
    with pytest.raises(ServiceUnavailableError, match="down for maintenance"):
        make(server, max_retries=1)("hi")


def test_max_retries_zero_never_retries(server: FakeLaminiServer) -> None:
    server.fail(503, "down")
    with pytest.raises(ServiceUnavailableError):
        make(server, max_retries=0)("hi")
    assert len(completions(server)) == 1


def test_stalled_server_hits_the_timeout(server: FakeLaminiServer) -> None:
    server.inject(Fault.stall(3))
    start = time.monotonic()
    with pytest.raises(RequestTimeoutError, match=r"within 0\.3s"):
        make(server, timeout=0.3)("hi")
    assert time.monotonic() - start < 2
    assert len(completions(server)) == 1  # timeouts are not retried


def test_malformed_json_is_a_clear_error(server: FakeLaminiServer) -> None:
    server.inject(Fault.malformed_json())
    with pytest.raises(BackendError, match="not valid JSON") as info:
        make(server)("hi")
    assert info.value.status_code == 200
    assert "this reply was cut" in str(info.value)


def test_dropped_connection_is_retried(server: FakeLaminiServer) -> None:
    server.inject(Fault.drop())
    assert make(server)("hi") == fake_text("hi", 128)
    assert len(completions(server)) == 2


@pytest.mark.parametrize("status", [400, 422])
def test_bad_request_detail_reaches_the_user(server: FakeLaminiServer, status: int) -> None:
    server.fail(status, "prompt is too long for this model")
    with pytest.raises(BadRequestError, match="prompt is too long for this model") as info:
        make(server)("hi")
    assert (info.value.status_code, info.value.detail) == (status, "prompt is too long for this model")
    assert len(completions(server)) == 1


def test_unknown_model_is_model_not_found(server: FakeLaminiServer) -> None:
    server.fail(594, "model 'nope' not found")
    with pytest.raises(ModelNotFoundError, match="'nope' not found"):
        make(server)("hi")
    assert len(completions(server)) == 1


def test_wrong_url_path_says_check_api_url(server: FakeLaminiServer) -> None:
    runner = LaminiRunner("m", api_key=KEY, api_url=server.url + "/wrong")
    with pytest.raises(BackendError, match="check api_url"):
        runner("hi")


def test_nothing_listening_is_service_unavailable() -> None:
    with FakeLaminiServer() as s:
        url = s.url
    runner = LaminiRunner("m", api_key=KEY, api_url=url, max_retries=1, backoff_base=0.001)
    with pytest.raises(ServiceUnavailableError, match="connection to Lamini"):
        runner("hi")


def test_batch_failure_names_the_failed_items(server: FakeLaminiServer) -> None:
    server.fail(400, "bad chunk")
    with pytest.raises(BatchError, match=r"2 of 6 prompts failed \(items 0-1\)") as info:
        make(server, batch_size=2, max_concurrency=1)([f"p{i}" for i in range(6)])
    assert sorted(info.value.failures) == [0, 1]
    assert info.value.failed == [0, 1]
    assert isinstance(info.value.failures[0], BadRequestError)
    assert str(info.value.failures[0]).startswith("items 0-1: ")
    # the chunks that succeeded are kept, in order, as the call would have returned them
    good = make(server)([f"p{i}" for i in range(2, 6)])
    assert info.value.results == [None, None, *good]


def test_authentication_failure_in_a_batch_is_raised_as_is(server: FakeLaminiServer) -> None:
    server.fail(401, "revoked", times=3)
    with pytest.raises(AuthenticationError):
        make(server, batch_size=2)([f"p{i}" for i in range(6)])


def test_retry_policy_backoff_grows_with_jitter() -> None:
    policy = RetryPolicy(max_retries=5, backoff_base=1.0, backoff_max=4.0)
    rng = random.Random(0)
    waits = [[policy.wait(n, None, rng) for _ in range(50)] for n in range(4)]
    for n, caps in enumerate([1.0, 2.0, 4.0, 4.0]):
        assert all(caps / 2 <= w <= caps for w in waits[n])
        assert len(set(waits[n])) > 1
    assert policy.wait(0, 3.0, rng) == 3.0  # Retry-After is a floor


# ----------------------------------------------------------------------------- one switch, the 2023 names


def test_seed_snippet_through_llmengine(server: FakeLaminiServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMRUN_BACKEND", "lamini")
    llm = LLMEngine(id="example_llm", config={"production.key": KEY, "production.url": server.url})
    answer = llm(Question(question="What is the highest mountain in the world?"), output_type=Answer)
    assert type(answer) is Answer
    assert KEY not in repr(llm)
    model = BasicModelRunner("EleutherAI/pythia-70m", config={"production": {"key": KEY, "url": server.url}})
    assert model("Question: What is 2 + 2? Answer:") == fake_text("Question: What is 2 + 2? Answer:", 128)


def test_load_reads_lamini_options_from_env(
    server: FakeLaminiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMRUN_BACKEND", "lamini")
    monkeypatch.setenv("LLMRUN_TIMEOUT", "7.5")
    monkeypatch.setenv("LLMRUN_BATCH_SIZE", "4")
    for name, value in {**server.env(), "LAMINI_API_KEY": KEY}.items():
        monkeypatch.setenv(name, value)
    runner = llmrun.load("some/model")
    assert isinstance(runner, LaminiRunner)
    assert (runner.timeout, runner.batch_size) == (7.5, 4)


def ask(questions: list[Question]) -> tuple[str, list[Answer]]:
    """A user's function: it never names a backend."""
    runner = llmrun.load()
    return runner("Once upon a time", max_new_tokens=4), runner(
        questions, output_type=Answer, max_new_tokens=48
    )


@pytest.mark.slow  # builds the tiny local checkpoint (shared with the conformance suite) and loads torch
def test_one_switch_local_and_lamini(
    server: FakeLaminiServer, monkeypatch: pytest.MonkeyPatch, tiny_gpt_neox_dir: Path
) -> None:
    pytest.importorskip("torch")
    monkeypatch.setenv("LLMRUN_MODEL", str(tiny_gpt_neox_dir))
    for name, value in {**server.env(), "LAMINI_API_KEY": KEY}.items():
        monkeypatch.setenv(name, value)
    questions = [Question(question="Who?"), Question(question="Where?")]
    results = {}
    for backend in ("local", "lamini"):
        monkeypatch.setenv("LLMRUN_BACKEND", backend)
        results[backend] = ask(questions)
    for text, answers in results.values():
        assert isinstance(text, str)
        assert [type(a) for a in answers] == [Answer, Answer]
    assert len(completions(server)) == 2  # only the lamini run reached the server


# ----------------------------------------------------------------------------- packaging


def test_missing_lamini_client_is_a_dependency_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m.startswith("llmrun.backends.lamini")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "lamini", None)
    with pytest.raises(DependencyError, match=r'pip install "llmrun\[lamini\]"'):
        importlib.import_module("llmrun.backends.lamini")


def test_fake_server_and_llmrun_do_not_import_lamini() -> None:
    code = (
        "import sys, llmrun, llmrun.testing.lamini_server; "
        "assert 'lamini' not in sys.modules and 'aiohttp' not in sys.modules, 'heavy import'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
