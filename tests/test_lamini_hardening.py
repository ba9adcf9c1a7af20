"""Issue 12, items 2, 3 and 5 on the Lamini backend: calls that are not idempotent are not retried
blindly, the API key is redacted from every error and log line, and a tuning job that never ends is
waited on against a deadline."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

import llmrun
from llmrun import Context, Type
from llmrun.backends.lamini.runner import LaminiRunner
from llmrun.backends.lamini.tuning import TuningTimeoutError
from llmrun.errors import OutputValidationError, RequestTimeoutError, ServiceUnavailableError
from llmrun.testing.lamini_server import FakeLaminiServer, Fault

KEY = "test-key"  # the key the fake_lamini fixture's server expects
PAIRS = [{"input": "Capital of France?", "output": "Paris"}, {"input": "2 + 2?", "output": "4"}]


def make_runner(server: FakeLaminiServer, **options: Any) -> llmrun.BasicModelRunner:
    """A 2023 facade (it holds the training data) over the Lamini backend, with PAIRS loaded."""
    options.setdefault("api_key", KEY)
    options.setdefault("poll_interval", 0.01)
    options.setdefault("backoff_base", 0.0)
    runner = llmrun.BasicModelRunner("base-model", backend="lamini", api_url=server.url, **options)
    assert isinstance(runner.backend, LaminiRunner)
    runner.load_data(PAIRS)
    return runner


# ----------------------------------------------------------------------------- item 2: no blind retries


def test_lost_reply_to_post_train_does_not_start_a_second_job(fake_lamini: FakeLaminiServer) -> None:
    fake_lamini.inject(Fault.lost_reply(502), path="/v1/train")
    result = make_runner(fake_lamini).train()
    assert len(fake_lamini.jobs) == 1  # a blind retry started job 2 as well
    assert len(fake_lamini.requests_to("/v1/train", "POST")) == 1
    assert result.job_id == "1"
    assert result.model_name == fake_lamini.jobs[1].model_name


def test_5xx_before_the_job_starts_is_retried_after_looking(fake_lamini: FakeLaminiServer) -> None:
    fake_lamini.fail(503, "overloaded", path="/v1/train")  # answered before any job exists
    result = make_runner(fake_lamini).train()
    assert len(fake_lamini.requests_to("/v1/train", "POST")) == 2
    assert len(fake_lamini.jobs) == 1
    assert result.job_id == "1"


def test_429_on_post_train_is_retried(fake_lamini: FakeLaminiServer) -> None:
    fake_lamini.fail(429, "slow down", retry_after=0.01, path="/v1/train")
    make_runner(fake_lamini).train()
    assert len(fake_lamini.requests_to("/v1/train", "POST")) == 2
    assert len(fake_lamini.jobs) == 1


def test_failed_job_lookup_is_not_retried_blindly(fake_lamini: FakeLaminiServer) -> None:
    runner = make_runner(fake_lamini)
    fake_lamini.inject(Fault.lost_reply(502), path="/v1/train")
    # the jobs list answers before POST /v1/train, then fails the lookup after it
    fake_lamini.inject(Fault.delay(0), path="/v1/train/jobs")
    fake_lamini.fail(400, "no listing today", path="/v1/train/jobs")
    with pytest.raises(ServiceUnavailableError, match=r"not retried: POST /v1/train may have taken effect"):
        runner.train()
    assert len(fake_lamini.requests_to("/v1/train", "POST")) == 1


def test_timeout_on_post_train_is_not_retried_and_says_where_to_look(fake_lamini: FakeLaminiServer) -> None:
    fake_lamini.inject(Fault.stall(1.0), path="/v1/train")
    with pytest.raises(RequestTimeoutError, match=r"may have started anyway: look at http://.*/tune"):
        make_runner(fake_lamini, timeout=0.3).train()
    assert len(fake_lamini.requests_to("/v1/train", "POST")) == 1


def test_lost_reply_to_data_upload_is_not_retried(fake_lamini: FakeLaminiServer) -> None:
    fake_lamini.inject(Fault.lost_reply(500), path="/v1/local-data")
    with pytest.raises(ServiceUnavailableError, match=r"not retried: POST /v1/local-data is not idempotent"):
        make_runner(fake_lamini).train()
    assert len(fake_lamini.requests_to("/v1/local-data")) == 1
    assert fake_lamini.jobs == {}


def test_refused_connection_on_upload_is_retried(fake_lamini: FakeLaminiServer) -> None:
    """A 429 means the server did not act: retried even for a call that is not idempotent."""
    fake_lamini.fail(429, "slow down", retry_after=0.01, path="/v1/local-data")
    make_runner(fake_lamini).train()
    assert len(fake_lamini.requests_to("/v1/local-data")) == 2


# ----------------------------------------------------------------------------- item 5: a deadline


def test_job_stuck_in_running_ends_with_a_timeout_naming_the_job(fake_lamini: FakeLaminiServer) -> None:
    fake_lamini.job_plan = ("RUNNING",)
    runner = make_runner(fake_lamini, wait_timeout=0.3)
    with pytest.raises(TuningTimeoutError, match=r"job 1 is still RUNNING") as caught:
        runner.train()
    assert (caught.value.job_id, caught.value.status) == ("1", "RUNNING")
    assert "runner.wait_for_job('1')" in str(caught.value)
    assert not fake_lamini.jobs[1].cancelled  # left running on the server

    fake_lamini.jobs[1].plan = ("RUNNING", "COMPLETED")  # it finishes later
    result = runner.wait_for_job("1")
    assert result.status == "completed"
    assert runner.model_name == fake_lamini.jobs[1].model_name


def test_unknown_status_is_logged_and_ends_at_the_deadline(
    fake_lamini: FakeLaminiServer, caplog: pytest.LogCaptureFixture
) -> None:
    fake_lamini.job_plan = ("WARMING_UP",)
    caplog.set_level(logging.INFO, logger="llmrun.backends.lamini")
    with pytest.raises(TuningTimeoutError, match=r"still WARMING_UP"):
        make_runner(fake_lamini, wait_timeout=0.2).train()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("does not know this status" in r.getMessage() for r in warnings)


def test_wait_timeout_is_checked(fake_lamini: FakeLaminiServer) -> None:
    with pytest.raises(llmrun.errors.ConfigurationError, match="wait_timeout"):
        make_runner(fake_lamini, wait_timeout="1h")


# ----------------------------------------------------------------------------- item 3: key redaction

SECRET = "sk-lamini-0123456789abcdef-SECRET"


@pytest.fixture
def secret_server() -> Iterator[FakeLaminiServer]:
    with FakeLaminiServer(api_key=SECRET) as server:
        yield server


class Count(Type):
    count: int = Context("how many")


def test_typed_reply_echoing_the_key_is_redacted_from_the_error(secret_server: FakeLaminiServer) -> None:
    runner = llmrun.load("m", backend="lamini", api_key=SECRET, api_url=secret_server.url)
    secret_server.responder = lambda prompt, output_type: {"count": f"my key is {SECRET}"}
    with pytest.raises(OutputValidationError) as caught:
        runner("how many?", output_type=Count)
    assert "***" in str(caught.value)  # the echoed text is there, without the key
    assert SECRET not in str(caught.value)
    assert SECRET not in caught.value.raw_text
    assert SECRET not in repr(caught.value.args)


def test_lamini_clients_debug_line_is_redacted(
    secret_server: FakeLaminiServer, caplog: pytest.LogCaptureFixture
) -> None:
    runner = llmrun.load("m", backend="lamini", api_key=SECRET, api_url=secret_server.url)
    secret_server.responder = lambda prompt, output_type: f"the key was {SECRET}"
    caplog.set_level(logging.DEBUG, logger="lamini")
    assert SECRET in runner("echo the key")  # the reply itself is the caller's to keep
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("lamini")]
    assert any("api response" in line for line in lines)  # the lamini client's DEBUG line was seen
    assert not any(SECRET in line for line in lines)
    assert SECRET not in caplog.text


def test_server_error_echoing_the_key_is_redacted(secret_server: FakeLaminiServer) -> None:
    runner = llmrun.load("m", backend="lamini", api_key=SECRET, api_url=secret_server.url, max_retries=0)
    secret_server.fail(400, f"bad key {SECRET}")
    with pytest.raises(llmrun.errors.BadRequestError) as caught:
        runner("x")
    assert SECRET not in str(caught.value)
    assert caught.value.detail is not None
    assert SECRET not in caught.value.detail
