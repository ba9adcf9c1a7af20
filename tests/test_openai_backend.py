"""The openai backend against the fake OpenAI-compatible server: settings, profiles, typed output and
re-asking, retries and faults, streaming, async, batches, and every bad input named."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import llmrun
from llmrun import Context, Type
from llmrun.backends.openai import OpenAIRunner
from llmrun.backends.openai.profiles import PROFILES
from llmrun.backends.openai.typed import TypedAsk
from llmrun.errors import (
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    ModelNotFoundError,
    OutputValidationError,
    RateLimitError,
    RequestTimeoutError,
    ServiceUnavailableError,
    UnsupportedFeatureError,
)
from llmrun.runner import OutputSpec
from llmrun.testing.openai_server import FakeOpenAIServer, Fault

KEY = "test-key"
MODEL = "fake-model"


class Question(Type):
    question: str = Context("a question")


class Answer(Type):
    answer: str = Context("a short answer")
    confidence: float = Context("how sure, 0 to 1", ge=0, le=1)


Q = Question(question="What is the capital of France?")


def make(server: FakeOpenAIServer, **options: Any) -> OpenAIRunner:
    options.setdefault("api_key", KEY)
    options.setdefault("backoff_base", 0.0)
    runner = llmrun.load(MODEL, backend="openai", base_url=server.base_url, **options)
    assert isinstance(runner, OpenAIRunner)
    return runner


def completions(server: FakeOpenAIServer) -> list[Any]:
    return server.requests_to("/v1/*completions", "POST")


# ----------------------------------------------------------------------------- settings


def test_load_from_environment(fake_openai_env: FakeOpenAIServer) -> None:
    runner = llmrun.load(MODEL)
    assert isinstance(runner, OpenAIRunner)
    assert runner.base_url == fake_openai_env.base_url
    assert isinstance(runner("Hello"), str)
    assert fake_openai_env.last_request is not None
    assert fake_openai_env.last_request.header("Authorization") == f"Bearer {KEY}"


def test_load_from_config_file(
    fake_openai: FakeOpenAIServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "llmrun.toml"
    config.write_text(
        f'backend = "openai"\n[openai]\nbase_url = "{fake_openai.base_url}"\napi_key = "{KEY}"\n'
        'profile = "vllm"\nmax_concurrency = 3\n'
    )
    monkeypatch.setenv("LLMRUN_CONFIG", str(config))
    fake_openai.profile = "vllm"
    runner = llmrun.load(MODEL)
    assert isinstance(runner, OpenAIRunner)
    assert (runner.profile, runner.max_concurrency) == (PROFILES["vllm"], 3)
    runner(Q, output_type=Answer)
    assert fake_openai.requests_to("/v1/models") == []  # a named profile needs no detection


def test_repr_and_errors_never_show_the_key(fake_openai: FakeOpenAIServer) -> None:
    secret = "sk-test-0123456789abcdefSECRET"
    runner = make(fake_openai, api_key=secret, max_retries=0)
    assert secret not in repr(runner)
    fake_openai.fail(500, f"upstream said: bad key {secret}")
    with pytest.raises(ServiceUnavailableError) as caught:
        runner("Hello")
    assert secret not in str(caught.value)
    assert "***" in str(caught.value)


def test_the_clients_debug_lines_are_redacted(
    fake_openai: FakeOpenAIServer, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "sk-test-fedcba9876543210SECRET"
    runner = make(fake_openai, api_key=secret)  # its key is redacted while the runner lives
    caplog.set_level(logging.DEBUG)
    for name in ("openai", "openai._base_client", "httpx", "llmrun.backends.openai"):
        logging.getLogger(name).debug("request with Authorization: Bearer %s", secret)
    assert "Bearer ***" in caplog.text
    assert secret not in caplog.text
    assert runner.model_name == MODEL


def test_openai_key_is_not_sent_to_other_servers(
    fake_openai: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-my-real-openai-key")
    fake_openai.api_key = None  # accepts any key
    try:
        runner = llmrun.load(MODEL, backend="openai", base_url=fake_openai.base_url, profile="vllm")
        runner("Hello")
    finally:
        fake_openai.api_key = KEY
    assert fake_openai.last_request is not None
    assert fake_openai.last_request.header("Authorization") == "Bearer EMPTY"


# ----------------------------------------------------------------------------- profiles


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_each_profile_asks_for_the_schema_the_way_its_server_reads_it(
    fake_openai: FakeOpenAIServer, profile: str
) -> None:
    fake_openai.profile = profile
    runner = make(fake_openai)  # detected: owned_by, and for vLLM its /version
    answer = runner(Q, output_type=Answer, max_new_tokens=64)
    assert isinstance(answer, Answer)
    assert runner.profile is not None
    assert runner.profile.name == profile
    (request,) = completions(fake_openai)
    assert request.body["max_tokens"] == 64
    schema = fake_openai.schema_in(request.body, request.path.endswith("/chat/completions"))
    assert schema is not None
    assert schema["properties"]["answer"]["maxLength"] <= 64 // 4  # bounded: the JSON closes in budget


def test_a_server_without_a_model_list_gets_the_generic_profile(fake_openai: FakeOpenAIServer) -> None:
    fake_openai.lists_models = False
    runner = make(fake_openai)
    assert isinstance(runner(Q, output_type=Answer), Answer)
    assert runner.profile is PROFILES["generic"]


def test_a_request_shaped_for_another_server_is_not_typed(fake_openai: FakeOpenAIServer) -> None:
    fake_openai.profile = "llamacpp"  # reads json_schema / response_format json_object
    runner = make(fake_openai, profile="vllm")  # sends structured_outputs, which llama.cpp ignores
    with pytest.raises(OutputValidationError, match="profile 'vllm' is meant to enforce"):
        runner(Q, output_type=Answer)


def test_ollama_typed_calls_use_chat_where_it_takes_a_schema(fake_openai: FakeOpenAIServer) -> None:
    fake_openai.profile = "ollama"
    runner = make(fake_openai)
    assert isinstance(runner(Q, output_type=Answer), Answer)
    runner("Hello")
    paths = [r.path for r in completions(fake_openai)]
    assert paths == ["/v1/chat/completions", "/v1/completions"]


def test_chat_option_sends_messages(fake_openai: FakeOpenAIServer) -> None:
    runner = make(fake_openai, chat=True)
    text = runner("Hello there")
    (request,) = completions(fake_openai)
    assert request.path == "/v1/chat/completions"
    assert request.body["messages"] == [{"role": "user", "content": "Hello there"}]
    assert isinstance(text, str)
    assert text


def test_sampling_settings_go_under_the_servers_names(fake_openai: FakeOpenAIServer) -> None:
    fake_openai.profile = "llamacpp"
    runner = make(fake_openai)
    runner("Hello", temperature=0.5, top_k=5, repetition_penalty=1.2, seed=3, stop=["\n"])
    body = completions(fake_openai)[0].body
    assert (body["temperature"], body["top_k"], body["repeat_penalty"], body["seed"], body["stop"]) == (
        0.5,
        5,
        1.2,
        3,
        ["\n"],
    )


def test_a_setting_the_server_cannot_take_fails_before_any_request(fake_openai: FakeOpenAIServer) -> None:
    runner = make(fake_openai, profile="ollama")
    with pytest.raises(UnsupportedFeatureError, match=r"top_k=5 cannot be honoured: .*profile 'ollama'"):
        runner("Hello", top_k=5)
    assert fake_openai.requests == []


# ----------------------------------------------------------------------------- re-asking


def test_a_server_ignoring_the_schema_is_asked_again_with_the_error(fake_openai: FakeOpenAIServer) -> None:
    fake_openai.ignore_schema = True
    runner = make(fake_openai)
    answer = runner(Q, output_type=Answer)
    assert isinstance(answer, Answer)
    _, second = completions(fake_openai)
    assert len(second.body["messages"]) == 3  # the question, the bad reply, the error
    assert second.body["messages"][1]["role"] == "assistant"
    assert "is not valid" in second.body["messages"][2]["content"]
    assert "confidence" in second.body["messages"][2]["content"]  # the validation error names the field


def test_re_asking_on_the_completions_endpoint_appends_the_error() -> None:
    """No built-in profile re-asks on /completions (those that take a schema there enforce it), so the
    conversation is checked by itself."""
    ask = TypedAsk(
        chat=False, fields={}, output=OutputSpec.for_type(Answer), enforced=False, profile="custom"
    )
    talk = ask.conversation("Q: capital of France?\nA:")
    assert talk.check('{"answer": 5}', "stop", last=False) is None
    assert isinstance(talk.current, str)
    assert talk.current.startswith('Q: capital of France?\nA:{"answer": 5}\n\nThat reply is not valid')
    assert "confidence" in talk.current
    good = '{"answer": "Paris", "confidence": 0.5}'
    assert talk.check(good, "stop", last=False) == good


def test_a_server_that_never_complies_ends_in_a_clear_error(fake_openai: FakeOpenAIServer) -> None:
    fake_openai.ignore_schema = True
    fake_openai.heeds_feedback = False
    runner = make(fake_openai, validation_retries=3)
    with pytest.raises(OutputValidationError, match="after asking 4 times") as caught:
        runner(Q, output_type=Answer)
    assert len(completions(fake_openai)) == 4
    assert caught.value.raw_text.startswith("Sure!")


def test_validation_retries_zero_asks_once(fake_openai: FakeOpenAIServer) -> None:
    fake_openai.ignore_schema = True
    with pytest.raises(OutputValidationError):
        make(fake_openai, validation_retries=0)(Q, output_type=Answer)
    assert len(completions(fake_openai)) == 1


def test_code_fences_around_json_are_accepted(fake_openai: FakeOpenAIServer) -> None:
    runner = make(fake_openai, chat=True)
    fake_openai.script(
        runner._prepare(Q, Answer, {})[0].prompts[0],
        '```json\n{"answer": "Paris", "confidence": 0.9}\n```',
    )
    assert runner(Q, output_type=Answer) == Answer(answer="Paris", confidence=0.9)


# ----------------------------------------------------------------------------- retries and faults


def test_5xx_is_retried_with_one_policy(fake_openai: FakeOpenAIServer) -> None:
    runner = make(fake_openai, profile="generic", max_retries=2)
    fake_openai.fail(503, "overloaded", times=2)
    assert isinstance(runner("Hello"), str)
    assert len(completions(fake_openai)) == 3  # ours only: the client's own retries are off


def test_retries_run_out(fake_openai: FakeOpenAIServer) -> None:
    runner = make(fake_openai, profile="generic", max_retries=1)
    fake_openai.fail(502, "bad gateway", times=5)
    with pytest.raises(ServiceUnavailableError, match="gave up after 2 attempts"):
        runner("Hello")
    assert len(completions(fake_openai)) == 2


def test_429_waits_for_retry_after(fake_openai: FakeOpenAIServer) -> None:
    runner = make(fake_openai, profile="generic")
    fake_openai.fail(429, "slow down", retry_after=0.2)
    runner("Hello")
    first, second = completions(fake_openai)
    assert second.time - first.time >= 0.18


def test_retry_after_over_the_limit_stops_at_once(fake_openai: FakeOpenAIServer) -> None:
    runner = make(fake_openai, profile="generic", max_retry_wait=1.0)
    fake_openai.fail(429, "slow down", retry_after=30)
    with pytest.raises(RateLimitError, match="over max_retry_wait"):
        runner("Hello")
    assert len(completions(fake_openai)) == 1


def test_a_timeout_is_not_retried(fake_openai: FakeOpenAIServer) -> None:
    runner = make(fake_openai, profile="generic", timeout=0.3)
    fake_openai.inject(Fault.stall(2.0))
    with pytest.raises(RequestTimeoutError, match="raise the timeout option"):
        runner("Hello")
    assert len(completions(fake_openai)) == 1


def test_a_dropped_connection_is_retried(fake_openai: FakeOpenAIServer) -> None:
    runner = make(fake_openai, profile="generic")
    fake_openai.inject(Fault.drop())
    assert isinstance(runner("Hello"), str)
    assert len(completions(fake_openai)) == 2


# ----------------------------------------------------------------------------- bad input


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_base_url_names_it() -> None:
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    runner = llmrun.load(MODEL, backend="openai", base_url=url, max_retries=1, backoff_base=0.0)
    with pytest.raises(
        ServiceUnavailableError, match=r"cannot reach the server at .*check base_url"
    ) as caught:
        runner("Hello")
    assert url in str(caught.value)


def test_wrong_key_is_not_retried(fake_openai: FakeOpenAIServer) -> None:
    runner = make(fake_openai, api_key="sk-wrong-key-123456", profile="generic")
    with pytest.raises(AuthenticationError, match="api_key") as caught:
        runner("Hello")
    assert "sk-wrong-key-123456" not in str(caught.value)
    assert len(fake_openai.requests) == 1


def test_a_model_the_server_does_not_have_is_named_with_the_ones_it_has(
    fake_openai: FakeOpenAIServer,
) -> None:
    runner = llmrun.load("no-such-model", backend="openai", base_url=fake_openai.base_url, api_key=KEY)
    with pytest.raises(ModelNotFoundError, match=r"no model 'no-such-model'; it serves: fake-model"):
        runner("Hello")
    assert completions(fake_openai) == []  # found out from /v1/models, before any completion


def test_a_missing_model_with_a_named_profile_is_model_not_found(fake_openai: FakeOpenAIServer) -> None:
    runner = llmrun.load(
        "no-such-model", backend="openai", base_url=fake_openai.base_url, api_key=KEY, profile="generic"
    )
    with pytest.raises(ModelNotFoundError, match="no model 'no-such-model'"):
        runner("Hello")
    assert len(completions(fake_openai)) == 1


def test_a_schema_the_server_rejects_names_the_profile(fake_openai: FakeOpenAIServer) -> None:
    fake_openai.reject_schema = True
    runner = make(fake_openai, profile="generic")
    with pytest.raises(BadRequestError, match="the way profile 'generic' does"):
        runner(Q, output_type=Answer)
    assert len(completions(fake_openai)) == 1


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"profile": "vllm2"}, r"profile='vllm2' is unknown; known profiles: auto, generic, openai, vllm"),
        ({"profile": None}, "profile=None .*is invalid: it must be a string"),
        ({"base_url": "localhost:8000"}, "base_url='localhost:8000' is invalid"),
        ({"chat": "yes"}, "chat='yes' .*is invalid: it must be True or False"),
        ({"max_concurrency": 0}, "max_concurrency=0 is invalid"),
        ({"validation_retries": -1}, "validation_retries=-1 is invalid"),
        ({"timeout": float("nan")}, "timeout=nan .*is invalid: it must be a finite number"),
        ({"api_key": 5}, "api_key=5 .*is invalid: it must be a string"),
        ({"not_an_option": 1}, "does not take option"),
    ],
)
def test_bad_options_fail_at_load(options: dict[str, Any], match: str) -> None:
    options.setdefault("base_url", "http://127.0.0.1:9/v1")
    with pytest.raises(ConfigurationError, match=match):
        llmrun.load(MODEL, backend="openai", **options)


def test_no_base_url_says_how_to_give_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLMRUN_BASE_URL", raising=False)
    with pytest.raises(ConfigurationError, match=r"needs base_url=\.\.\. \(or LLMRUN_BASE_URL\)"):
        llmrun.load(MODEL, backend="openai")


def test_hosted_services_are_known_by_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env-0123456789")
    runner = llmrun.load("gpt-4o-mini", backend="openai", base_url="https://api.openai.com/v1")
    assert isinstance(runner, OpenAIRunner)
    assert runner.profile is PROFILES["openai"]  # no detection request; the key read from its variable
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(ConfigurationError, match="OPENAI_API_KEY"):
        llmrun.load("gpt-4o-mini", backend="openai", base_url="https://api.openai.com/v1")


def test_the_openai_profile_needs_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("LLMRUN_API_KEY", raising=False)
    with pytest.raises(ConfigurationError, match=r"no API key for profile 'openai'.*OPENAI_API_KEY"):
        llmrun.load("gpt-4o-mini", backend="openai", profile="openai")


# ----------------------------------------------------------------------------- streaming, async, batches


@pytest.mark.parametrize("chat", [False, True])
def test_stream_joins_to_the_full_text(fake_openai: FakeOpenAIServer, chat: bool) -> None:
    runner = make(fake_openai, profile="generic", chat=chat)
    pieces = list(runner.stream("Once upon a time", max_new_tokens=12))
    assert len(pieces) > 1
    assert "".join(pieces) == runner("Once upon a time", max_new_tokens=12)
    assert completions(fake_openai)[0].body["stream"] is True


def test_stream_typed_yields_partial_objects_ending_in_the_result(fake_openai: FakeOpenAIServer) -> None:
    runner = make(fake_openai, profile="vllm")
    fake_openai.profile = "vllm"
    partials = list(runner.stream(Q, output_type=Answer))
    assert partials
    assert all(isinstance(p, Answer) for p in partials)
    assert partials[-1] == runner(Q, output_type=Answer)


def test_stream_checks_settings_before_the_first_delta(fake_openai: FakeOpenAIServer) -> None:
    runner = make(fake_openai, profile="ollama")
    with pytest.raises(UnsupportedFeatureError, match="top_k"):
        runner.stream("Hello", top_k=3)  # not even iterated
    assert fake_openai.requests == []


def test_closing_a_stream_early_is_clean(fake_openai: FakeOpenAIServer) -> None:
    runner = make(fake_openai, profile="generic")
    stream = runner.stream("Once upon a time", max_new_tokens=12)
    first = next(stream)
    stream.close()  # type: ignore[attr-defined]
    assert first
    assert isinstance(runner("next call works"), str)


def test_stream_errors_are_llmrun_errors(fake_openai: FakeOpenAIServer) -> None:
    runner = make(fake_openai, profile="generic", max_retries=0)
    fake_openai.fail(503, "down")
    with pytest.raises(ServiceUnavailableError):
        list(runner.stream("Hello"))


def test_agenerate_from_a_running_loop(fake_openai: FakeOpenAIServer) -> None:
    runner = make(fake_openai)

    async def main() -> tuple[Answer, list[str]]:
        return await asyncio.gather(  # type: ignore[return-value]
            runner.agenerate(Q, output_type=Answer), runner.agenerate(["a", "b"])
        )

    answer, texts = asyncio.run(main())
    assert answer == runner(Q, output_type=Answer)
    assert texts == [runner("a"), runner("b")]


def test_batches_are_concurrent_with_a_bound(fake_openai: FakeOpenAIServer) -> None:
    fake_openai.latency_s = 0.05
    runner = make(fake_openai, profile="generic", max_concurrency=3)
    prompts = [f"prompt {i}" for i in range(9)]
    texts = runner(prompts)
    assert fake_openai.peak_concurrency == 3
    assert texts == [runner(p) for p in prompts]  # order kept


def test_one_failed_prompt_of_a_batch_is_named(fake_openai: FakeOpenAIServer) -> None:
    runner = make(fake_openai, profile="generic", max_retries=0, max_concurrency=1)
    fake_openai.inject(Fault.delay(0))  # the first prompt goes through
    fake_openai.fail(400, "bad prompt")
    with pytest.raises(llmrun.errors.BatchError, match=r"1 of 3 prompts failed \(items 1\)") as caught:
        runner(["a", "b", "c"])
    assert set(caught.value.failures) == {1}


@pytest.fixture
def echo_server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(models={MODEL}) as server:
        server.responder = lambda prompt, schema: json.dumps({"echo": prompt})
        yield server


def test_text_replies_come_back_as_sent(echo_server: FakeOpenAIServer) -> None:
    assert make(echo_server)("Hi") == json.dumps({"echo": "Hi"})
