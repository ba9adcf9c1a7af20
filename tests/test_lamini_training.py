"""Fine-tuning on the Lamini backend, against the fake Lamini server: train, poll, cancel, evaluate."""

from __future__ import annotations

import itertools
import json
import logging
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("lamini", reason="the lamini backend needs the optional lamini client")

import llmrun
from llmrun import Context, Type
from llmrun.backends.lamini import LaminiRunner
from llmrun.backends.lamini.tuning import TuningJobError, finetune_args
from llmrun.errors import (
    AuthenticationError,
    BackendError,
    BadRequestError,
    ConfigurationError,
    ServiceUnavailableError,
    TrainingError,
    UnsupportedFeatureError,
)
from llmrun.runner import ModelRunner
from llmrun.testing.lamini_server import FakeLaminiServer, Fault
from llmrun.testing.lamini_wire import BLOB_SIGNATURE, DEFAULT_FAILURE_MESSAGE
from llmrun.training import EvalResult, TrainOptions, TrainResult

KEY = "test-key"  # the key the fake_lamini fixture's server expects
QA = [
    {"question": "What is the capital of France?", "answer": "Paris"},
    {"question": "What is 2 + 2?", "answer": "4"},
    {"question": "Which planet is the largest?", "answer": "Jupiter"},
    {"question": "Who wrote Hamlet?", "answer": "Shakespeare"},
]
PAIRS = [{"input": row["question"], "output": row["answer"]} for row in QA]


class Question(Type):
    question: str = Context("a question about the world")


class Answer(Type):
    answer: str = Context("a short factual answer")
    confidence: float = Context("how sure the answer is, 0 to 1", ge=0, le=1)


@pytest.fixture
def qa_file(tmp_path: Path) -> Path:
    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in QA), encoding="utf-8")
    return path


def make_runner(server: FakeLaminiServer, model: str = "base-model", **options: Any) -> LaminiRunner:
    options.setdefault("poll_interval", 0.01)
    options.setdefault("backoff_base", 0.001)
    options.setdefault("api_key", KEY)
    runner = llmrun.load(model, backend="lamini", api_url=server.url, **options)
    assert isinstance(runner, LaminiRunner)
    return runner


def loaded_runner(server: FakeLaminiServer, qa_file: Path, **options: Any) -> LaminiRunner:
    runner = make_runner(server, **options)
    runner.load_data_from_jsonlines(qa_file, input_key="question", output_key="answer")
    return runner


def status_polls(server: FakeLaminiServer, job_id: int = 1) -> list[Any]:
    return server.requests_to(f"/v1/train/jobs/{job_id}", method="GET")


def interrupt_main_thread_when(condition: Callable[[], bool], timeout: float = 10.0) -> threading.Thread:
    """Send SIGINT (what Ctrl-C sends) to the main thread once ``condition()`` holds."""
    main = threading.main_thread()
    assert threading.current_thread() is main, "the Ctrl-C tests must run in the main thread"

    def watch() -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                signal.pthread_kill(main.ident or 0, signal.SIGINT)
                return
            time.sleep(0.002)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


# ----------------------------------------------------------------------------- the whole flow


def test_full_flow_load_train_generate_evaluate(fake_lamini: FakeLaminiServer, qa_file: Path) -> None:
    runner = loaded_runner(fake_lamini, qa_file)
    result = runner.train()

    assert isinstance(result, TrainResult)
    tuned = fake_lamini.jobs[1].model_name
    assert tuned is not None
    assert (result.status, result.job_id, result.model_name, result.run_dir) == (
        "completed",
        "1",
        tuned,
        None,
    )
    assert result.metrics["num_examples"] == 4
    assert result.metrics["status_polls"] == 3  # SCHEDULED, RUNNING, COMPLETED
    assert runner.model_name == tuned  # later calls use the tuned model
    # the pairs went up as Lamini input/output pairs, the completion without the local separator
    assert fake_lamini.jobs[1].data == PAIRS
    assert fake_lamini.jobs[1].base_model == "base-model"
    assert [(r.method, r.path) for r in fake_lamini.requests] == [
        ("GET", "/v1/get-upload-base-path"),
        ("POST", "/v1/local-data"),
        ("GET", "/v1/get-upload-base-path"),
        ("POST", "/v1/existing-data"),
        ("POST", "/v1/train"),
        ("GET", "/v1/train/jobs/1"),
        ("GET", "/v1/train/jobs/1"),
        ("GET", "/v1/train/jobs/1"),
    ]

    # the fake's tuned model answers its training inputs with the training outputs
    assert runner("What is the capital of France?") == "Paris"
    assert runner([row["question"] for row in QA]) == [row["answer"] for row in QA]
    assert fake_lamini.requests_to("/v1/completions")[-1].body["model_name"] == tuned

    report = runner.evaluate()
    assert isinstance(report, EvalResult)
    assert report.exact_match == 1.0
    assert report.num_examples == 4
    assert (report.loss, report.perplexity) == (None, None)
    assert [(s.prompt, s.expected, s.got) for s in report.samples] == [
        (row["question"], row["answer"], row["answer"])
        for row in QA[:3]  # num_samples=3
    ]
    assert report.extra["job_id"] == "1"
    assert report.extra["model_name"] == tuned
    assert report.extra["base_exact_match"] == 0.0  # the base model answers with filler
    assert report.extra["unmatched_rows"] == 0
    assert [row["input"] for row in report.extra["eval_results"]] == [row["question"] for row in QA]
    assert "exact_match=1" in str(report)
    json.dumps(report.to_dict())  # JSON-ready, raw rows included


def test_a_second_train_continues_from_the_tuned_model(fake_lamini: FakeLaminiServer, qa_file: Path) -> None:
    runner = loaded_runner(fake_lamini, qa_file)
    first = runner.train()
    second = runner.train()
    assert fake_lamini.jobs[2].base_model == first.model_name
    assert runner.model_name == second.model_name != first.model_name


def test_typed_pairs_train_and_come_back_typed(fake_lamini: FakeLaminiServer) -> None:
    runner = make_runner(fake_lamini)
    pairs = [
        (Question(question="Capital of France?"), Answer(answer="Paris", confidence=0.9)),
        (Question(question="2 + 2?"), Answer(answer="4", confidence=1.0)),
    ]
    runner.load_data(pairs)
    runner.train()
    uploaded = fake_lamini.jobs[1].data
    assert json.loads(uploaded[0]["output"]) == {"answer": "Paris", "confidence": 0.9}
    assert "Capital of France?" in uploaded[0]["input"]  # the rendered prompt, as local training sees it
    assert runner(Question(question="Capital of France?"), output_type=Answer) == pairs[0][1]
    assert runner.evaluate().exact_match == 1.0  # JSON completions compare as JSON


def test_requests_are_the_ones_the_lamini_client_sends(
    fake_lamini: FakeLaminiServer, lamini_client: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """llmrun sends what ``lamini.Lamini.train`` sends, request for request."""
    client = lamini_client.Lamini("base-model", api_key=KEY, api_url=fake_lamini.url)
    client.train(PAIRS, finetune_args={"max_steps": 7, "learning_rate": 0.0001})
    theirs = [(r.method, r.path, r.body) for r in fake_lamini.requests]
    capsys.readouterr()  # the client prints; llmrun must not
    fake_lamini.reset()

    runner = make_runner(fake_lamini)
    runner.load_data(PAIRS)
    runner.train(max_steps=7, learning_rate=0.0001)
    ours = [(r.method, r.path, r.body) for r in fake_lamini.requests][: len(theirs)]
    assert ours == theirs
    assert capsys.readouterr().out == ""


@pytest.fixture
def lamini_client() -> Any:
    import lamini

    return lamini


# ----------------------------------------------------------------------------- how jobs end


def test_failed_job_raises_training_error_with_id_and_message(
    fake_lamini: FakeLaminiServer, qa_file: Path
) -> None:
    fake_lamini.job_plan = ("SCHEDULED", "RUNNING", "FAILED")
    fake_lamini.failure_message = "CUDA out of memory on the tuning node"
    runner = loaded_runner(fake_lamini, qa_file)
    with pytest.raises(TrainingError, match=r"job 1 failed \(FAILED\): CUDA out of memory") as info:
        runner.train()
    assert isinstance(info.value, TuningJobError)
    assert (info.value.job_id, info.value.status) == ("1", "FAILED")
    assert info.value.detail == "CUDA out of memory on the tuning node"
    assert runner.model_name == "base-model"  # no tuned model to switch to
    assert runner.tuning_job is None
    assert len(status_polls(fake_lamini)) == 3


def test_default_failure_message_reaches_the_user(fake_lamini: FakeLaminiServer, qa_file: Path) -> None:
    fake_lamini.job_plan = ("FAILED",)
    with pytest.raises(TrainingError, match=DEFAULT_FAILURE_MESSAGE):
        loaded_runner(fake_lamini, qa_file).train()


def test_job_cancelled_elsewhere_raises_training_error(fake_lamini: FakeLaminiServer, qa_file: Path) -> None:
    fake_lamini.job_plan = ("SCHEDULED", "CANCELLED")
    runner = loaded_runner(fake_lamini, qa_file)
    with pytest.raises(TuningJobError, match=r"job 1 was cancelled \(CANCELLED\): cancelled on the Lamini"):
        runner.train()
    assert runner.model_name == "base-model"


def test_partially_completed_job_gives_its_model_with_a_warning(
    fake_lamini: FakeLaminiServer, qa_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake_lamini.job_plan = ("RUNNING", "PARTIALLY COMPLETED")
    runner = loaded_runner(fake_lamini, qa_file)
    with caplog.at_level(logging.WARNING, logger="llmrun"):
        result = runner.train()
    assert result.model_name == fake_lamini.jobs[1].model_name == runner.model_name
    assert "ended PARTIALLY COMPLETED" in caplog.text


@pytest.mark.usefixtures("ctrl_c")
def test_ctrl_c_while_waiting_cancels_the_job_and_reraises(
    fake_lamini: FakeLaminiServer, qa_file: Path
) -> None:
    fake_lamini.job_plan = ("SCHEDULED", "RUNNING")  # never ends by itself
    runner = loaded_runner(fake_lamini, qa_file, poll_interval=0.2)
    watcher = interrupt_main_thread_when(lambda: len(status_polls(fake_lamini)) >= 2)
    with pytest.raises(KeyboardInterrupt) as info:
        runner.train()  # Ctrl-C lands in the sleep between two polls
    watcher.join()
    assert len(fake_lamini.requests_to("/v1/train/jobs/1/cancel", method="POST")) == 1
    assert fake_lamini.jobs[1].status == "CANCELLED"
    assert "cancelled Lamini tuning job 1" in " ".join(getattr(info.value, "__notes__", []))
    assert runner.model_name == "base-model"


@pytest.mark.usefixtures("ctrl_c")
def test_ctrl_c_during_a_status_request_cancels_the_job(fake_lamini: FakeLaminiServer, qa_file: Path) -> None:
    fake_lamini.job_plan = ("RUNNING",)
    fake_lamini.inject(Fault.delay(1.0), path="/v1/train/jobs/1")  # the first poll hangs for a second
    runner = loaded_runner(fake_lamini, qa_file)
    watcher = interrupt_main_thread_when(lambda: len(status_polls(fake_lamini)) >= 1)
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        runner.train()
    watcher.join()
    assert time.monotonic() - started < 0.9  # the hanging request was abandoned, not waited for
    assert len(fake_lamini.requests_to("/v1/train/jobs/1/cancel", method="POST")) == 1
    assert fake_lamini.jobs[1].status == "CANCELLED"


@pytest.mark.usefixtures("ctrl_c")
def test_ctrl_c_reraised_even_when_cancelling_fails(
    fake_lamini: FakeLaminiServer, qa_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake_lamini.job_plan = ("RUNNING",)
    fake_lamini.fail(400, "job cannot be cancelled now", path="/v1/train/jobs/1/cancel")
    runner = loaded_runner(fake_lamini, qa_file, poll_interval=0.2)
    watcher = interrupt_main_thread_when(lambda: len(status_polls(fake_lamini)) >= 1)
    with caplog.at_level(logging.WARNING, logger="llmrun"), pytest.raises(KeyboardInterrupt):
        runner.train()
    watcher.join()
    assert "Could not cancel Lamini tuning job 1" in caplog.text
    assert "job cannot be cancelled now" in caplog.text
    assert "/tune/1" in caplog.text  # where to cancel it by hand


# ----------------------------------------------------------------------------- HTTP errors


def test_401_on_upload_is_an_authentication_error_without_retry(
    fake_lamini: FakeLaminiServer, qa_file: Path
) -> None:
    fake_lamini.fail(401, "Invalid API key", path="/v1/local-data", times=5)
    runner = loaded_runner(fake_lamini, qa_file)
    with pytest.raises(AuthenticationError, match="Invalid API key"):
        runner.train()
    assert len(fake_lamini.requests_to("/v1/local-data")) == 1
    assert not fake_lamini.requests_to("/v1/train")
    assert not fake_lamini.jobs


def test_400_detail_on_start_reaches_the_user(fake_lamini: FakeLaminiServer, qa_file: Path) -> None:
    fake_lamini.fail(400, "model base-model cannot be tuned on the free tier", path="/v1/train")
    with pytest.raises(BadRequestError, match="cannot be tuned on the free tier") as info:
        loaded_runner(fake_lamini, qa_file).train()
    assert info.value.status_code == 400


def test_5xx_and_429_while_polling_are_retried(fake_lamini: FakeLaminiServer, qa_file: Path) -> None:
    fake_lamini.fail(503, "busy", path="/v1/train/jobs/1")
    fake_lamini.fail(429, "slow down", retry_after=0.01, path="/v1/train/jobs/1")
    result = loaded_runner(fake_lamini, qa_file).train()
    assert result.model_name == fake_lamini.jobs[1].model_name
    assert len(status_polls(fake_lamini)) == 5  # 2 refused, then the 3 statuses


def test_polling_failure_says_the_job_may_still_run(fake_lamini: FakeLaminiServer, qa_file: Path) -> None:
    fake_lamini.fail(503, "status service down", path="/v1/train/jobs/1", times=10)
    runner = loaded_runner(fake_lamini, qa_file, max_retries=1)
    with pytest.raises(
        ServiceUnavailableError, match=r"status service down.*job 1, which may still be running"
    ):
        runner.train()
    assert fake_lamini.jobs[1].status == "SCHEDULED"  # not cancelled: it was no Ctrl-C


def test_malformed_status_reply_is_a_clear_error(fake_lamini: FakeLaminiServer, qa_file: Path) -> None:
    fake_lamini.inject(Fault.malformed_json(), path="/v1/train/jobs/1")
    with pytest.raises(BackendError, match=r"not valid JSON.*job 1"):
        loaded_runner(fake_lamini, qa_file).train()


# ----------------------------------------------------------------------------- polling and progress


def test_poll_interval_is_honoured(fake_lamini: FakeLaminiServer, qa_file: Path) -> None:
    fake_lamini.job_plan = ("SCHEDULED", "RUNNING", "RUNNING", "COMPLETED")
    runner = loaded_runner(fake_lamini, qa_file, poll_interval=0.05)
    result = runner.train()
    polls = status_polls(fake_lamini)
    assert len(polls) == 4 == result.metrics["status_polls"]
    gaps = [b.time - a.time for a, b in itertools.pairwise(polls)]
    assert all(gap >= 0.045 for gap in gaps), gaps
    assert result.metrics["wait_seconds"] >= 0.14


def test_poll_interval_from_the_environment(
    fake_lamini: FakeLaminiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMRUN_POLL_INTERVAL", "0.25")
    runner = llmrun.load("m", backend="lamini", api_key=KEY, api_url=fake_lamini.url)
    assert isinstance(runner, LaminiRunner)
    assert runner.poll_interval == 0.25
    assert LaminiRunner("m", api_key=KEY).poll_interval == 5.0


@pytest.mark.parametrize("bad", [0, -1, float("nan"), "fast", True])
def test_bad_poll_interval_is_a_configuration_error(bad: Any) -> None:
    with pytest.raises(ConfigurationError, match="poll_interval"):
        LaminiRunner("m", api_key=KEY, poll_interval=bad)


def test_progress_is_logged_and_shown_when_asked(
    fake_lamini: FakeLaminiServer,
    qa_file: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    runner = loaded_runner(fake_lamini, qa_file)
    with caplog.at_level(logging.INFO, logger="llmrun"):
        runner.train()
    for line in ("Lamini tuning job 1: SCHEDULED", "Lamini tuning job 1: RUNNING", "tuned model"):
        assert line in caplog.text
    assert capsys.readouterr().err == ""  # no bar unless asked

    loaded_runner(fake_lamini, qa_file, progress=True).train()
    err = capsys.readouterr().err
    assert "Lamini job 2" in err
    assert "COMPLETED" in err


# ----------------------------------------------------------------------------- options


def test_max_steps_and_learning_rate_become_finetune_args(
    fake_lamini: FakeLaminiServer, qa_file: Path
) -> None:
    loaded_runner(fake_lamini, qa_file).train(max_steps=7, learning_rate=1e-4)
    assert fake_lamini.jobs[1].finetune_args == {"max_steps": 7, "learning_rate": 1e-4}
    loaded_runner(fake_lamini, qa_file).train()
    assert "finetune_args" not in fake_lamini.requests_to("/v1/train")[1].body


@pytest.mark.parametrize(
    "options",
    [
        {"lora": True},
        {"method": "full"},
        {"lora_r": 16},
        {"lora_target_modules": ["q_proj"]},
        {"resume": True},
    ],
)
def test_settings_lamini_cannot_honour_fail_before_any_request(
    fake_lamini: FakeLaminiServer, qa_file: Path, options: dict[str, Any]
) -> None:
    runner = loaded_runner(fake_lamini, qa_file)
    with pytest.raises(UnsupportedFeatureError, match=f"{next(iter(options)).split('_target')[0]}.*Lamini"):
        runner.train(**options)
    assert fake_lamini.requests == []


def test_settings_lamini_ignores_are_warned_about_but_not_local_loop_ones(
    fake_lamini: FakeLaminiServer, qa_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="llmrun"):
        loaded_runner(fake_lamini, qa_file).train(
            epochs=5, batch_size=2, bf16=True, save_every_steps=10, max_steps=3
        )
    assert fake_lamini.jobs[1].finetune_args == {"max_steps": 3}
    assert "Lamini ignores training option(s) batch_size, epochs:" in caplog.text
    assert "bf16" not in caplog.text  # the local loop's settings are not Lamini's to warn about
    assert "save_every_steps" not in caplog.text


def test_finetune_args_of_default_options_are_empty() -> None:
    assert finetune_args(TrainOptions()) == {}


def test_no_data_is_an_error_before_any_request(fake_lamini: FakeLaminiServer) -> None:
    with pytest.raises(llmrun.errors.InvalidInputError, match="no training data"):
        make_runner(fake_lamini).train()
    assert fake_lamini.requests == []


# ----------------------------------------------------------------------------- evaluate


def test_evaluate_before_training_is_a_clear_error(fake_lamini: FakeLaminiServer, qa_file: Path) -> None:
    runner = loaded_runner(fake_lamini, qa_file)
    with pytest.raises(TrainingError, match=r"no Lamini tuning job produced model 'base-model'.*train\(\)"):
        runner.evaluate()
    assert not fake_lamini.requests_to("/v1/train/jobs/*/eval")


def test_evaluate_a_tuned_model_by_name_finds_its_job(fake_lamini: FakeLaminiServer, qa_file: Path) -> None:
    tuned = loaded_runner(fake_lamini, qa_file).train().model_name
    later = make_runner(fake_lamini, model=tuned)  # e.g. `llmrun eval <tuned-name> qa.jsonl --backend lamini`
    later.load_data_from_jsonlines(qa_file, input_key="question", output_key="answer")
    report = later.evaluate()
    assert report.exact_match == 1.0
    assert later.tuning_job is not None
    assert later.tuning_job.job_id == "1"


def test_evaluate_scores_only_rows_of_loaded_pairs(fake_lamini: FakeLaminiServer, qa_file: Path) -> None:
    runner = loaded_runner(fake_lamini, qa_file)
    runner.train()
    runner.clear_data()
    runner.load_data([{"input": "What is 2 + 2?", "output": "5"}, {"input": "unseen?", "output": "x"}])
    report = runner.evaluate()
    assert report.num_examples == 1
    assert report.exact_match == 0.0
    assert report.samples[0].got == "4"
    assert report.extra["unmatched_rows"] == 3
    runner.clear_data()
    empty = runner.evaluate()
    assert (empty.exact_match, empty.num_examples, empty.samples) == (None, 0, ())


# ----------------------------------------------------------------------------- uploads through blob storage


def test_azure_style_upload_goes_through_the_signed_blob_url(
    fake_lamini: FakeLaminiServer, qa_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake_lamini.upload_mode = "azure"
    runner = loaded_runner(fake_lamini, qa_file)
    with caplog.at_level(logging.DEBUG):
        result = runner.train()
    assert result.model_name == runner.model_name
    paths = [
        (r.method, r.path.split("/")[-1] if r.path.startswith("/fakeaccount") else r.path)
        for r in fake_lamini.requests
    ]
    dataset_id = fake_lamini.jobs[1].dataset_id
    assert paths[:5] == [
        ("GET", "/v1/get-upload-base-path"),
        ("POST", "/v1/data"),
        ("HEAD", f"{dataset_id}.jsonl"),
        ("PUT", f"{dataset_id}.jsonl"),
        ("POST", "/v1/data/num-datapoints"),
    ]
    assert fake_lamini.datasets[dataset_id] == PAIRS
    assert runner("Who wrote Hamlet?") == "Shakespeare"
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("llmrun")]
    assert ours
    assert not [line for line in ours if BLOB_SIGNATURE in line]  # (urllib3's own DEBUG lines show URLs)


def test_the_lamini_client_uploads_to_the_fake_blob_store_too(
    fake_lamini: FakeLaminiServer, lamini_client: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_lamini.upload_mode = "azure"
    client = lamini_client.Lamini("base-model", api_key=KEY, api_url=fake_lamini.url)
    job = client.train(PAIRS)
    capsys.readouterr()
    assert fake_lamini.jobs[job["job_id"]].data == PAIRS
    assert any("comp=" not in r.path for r in fake_lamini.requests_to("/fakeaccount/*", method="PUT"))


def test_fake_blob_store_checks_signature_and_counts(fake_lamini: FakeLaminiServer) -> None:
    api = fake_lamini.api
    api.upload_mode = "azure"
    created = api.handle("POST", "/v1/data", {"upload_base_path": "azure"})
    path = "/fakeaccount/datasets/" + created["dataset_id"] + ".jsonl"
    assert api.blob("PUT", path, {"sig": "wrong"}, b"")[0] == 403
    assert api.blob("HEAD", path, {"sig": BLOB_SIGNATURE}, b"")[0] == 404
    assert api.blob("PUT", path, {"sig": BLOB_SIGNATURE}, b"not json\n")[0] == 400
    line = json.dumps(PAIRS[0]).encode() + b"\n"
    assert api.blob("PUT", path, {"sig": BLOB_SIGNATURE, "comp": "block", "blockid": "b1"}, line)[0] == 201
    body = b"<BlockList><Latest>b1</Latest><Latest>b1</Latest></BlockList>"
    assert api.blob("PUT", path, {"sig": BLOB_SIGNATURE, "comp": "blocklist"}, body)[0] == 201
    assert api.datasets[created["dataset_id"]] == [PAIRS[0], PAIRS[0]]
    assert api.blob("HEAD", path, {"sig": BLOB_SIGNATURE}, b"")[0] == 200
    with pytest.raises(Exception, match="holds 2 lines"):
        api.handle(
            "POST", "/v1/data/num-datapoints", {"dataset_id": created["dataset_id"], "num_datapoints": 3}
        )


# ----------------------------------------------------------------------------- the key stays secret


def test_key_never_appears_in_errors_logs_or_results(
    qa_file: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = "sk-secret-7f3a9c1e5b"
    with FakeLaminiServer(api_key=secret) as server:
        server.job_plan = ("RUNNING", "FAILED")
        server.failure_message = f"node rejected token {secret}"  # a server that echoes the key
        runner = make_runner(server, api_key=secret, progress=True)
        runner.load_data_from_jsonlines(qa_file, input_key="question", output_key="answer")
        with caplog.at_level(logging.DEBUG), pytest.raises(TuningJobError) as info:
            runner.train()
        server.job_plan = ("COMPLETED",)
        result = runner.train()
        report = runner.evaluate()
    seen = [
        str(info.value),
        repr(info.value),
        str(info.value.detail),
        caplog.text,
        repr(runner),
        repr(result),
    ]
    seen += [str(report), json.dumps(report.to_dict()), *capsys.readouterr()]
    assert not [text for text in seen if secret in text]
    assert "node rejected token ***" in str(info.value)


# ----------------------------------------------------------------------------- inside an event loop


async def test_train_works_when_called_inside_an_event_loop(
    fake_lamini: FakeLaminiServer, qa_file: Path
) -> None:
    runner = loaded_runner(fake_lamini, qa_file)
    result = runner.train()  # a notebook cell: a loop is running in this thread
    assert runner("Who wrote Hamlet?") == "Shakespeare"
    assert runner.evaluate().exact_match == 1.0
    assert result.job_id == "1"


# ----------------------------------------------------------------------------- one switch: local or lamini


def _local_can_train() -> bool:
    from llmrun.registry import get_backend

    local = get_backend("local")
    return local.train_examples is not ModelRunner.train_examples


def user_fine_tuning(data: Path) -> tuple[Any, Any, Any]:
    """User code: nothing in it names a backend."""
    model = llmrun.load()
    model.load_data_from_jsonlines(data, input_key="question", output_key="answer")
    result = model.train(max_steps=4)
    report = model.evaluate()
    answer = model("What is the capital of France?")
    return result, report, answer


def test_same_fine_tuning_code_runs_on_local_and_lamini(
    fake_lamini_env: FakeLaminiServer,
    qa_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    if not _local_can_train():
        pytest.skip("LocalRunner.train_examples is not wired yet (src/llmrun/backends/local/runner.py)")
    tiny_gpt_neox_dir: Path = request.getfixturevalue("tiny_gpt_neox_dir")
    monkeypatch.setenv("LLMRUN_MODEL", str(tiny_gpt_neox_dir))
    monkeypatch.setenv("LLMRUN_POLL_INTERVAL", "0.01")  # read by lamini only

    outcomes = {}
    for backend in ("local", "lamini"):
        monkeypatch.setenv("LLMRUN_BACKEND", backend)
        outcomes[backend] = user_fine_tuning(qa_file)

    for result, report, answer in outcomes.values():
        assert type(result) is TrainResult
        assert result.status == "completed"
        assert type(report) is EvalResult
        assert isinstance(answer, str)
    local_result = outcomes["local"][0]
    lamini_result, lamini_report, lamini_answer = outcomes["lamini"]
    assert (local_result.job_id, lamini_result.run_dir) == (None, None)
    assert local_result.run_dir is not None
    assert lamini_result.job_id == "1"
    assert fake_lamini_env.jobs[1].finetune_args == {"max_steps": 4}
    assert lamini_answer == "Paris"
    assert lamini_report.exact_match == 1.0
