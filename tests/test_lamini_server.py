"""The fake Lamini server: wire format, scripting, recording, auth, faults, tuning jobs, lifecycle.

Most tests speak raw HTTP (urllib) so they check the wire format itself; the
``lamini client`` tests check that the real ``lamini`` 3.4 client works against it.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from llmrun.testing import fake_http
from llmrun.testing.lamini_server import (
    FakeLaminiServer,
    Fault,
)
from llmrun.testing.lamini_wire import LAMINI_TYPE_NAMES, fake_text, fake_value

KEY = "test-key"


@pytest.fixture(scope="module")
def server() -> Iterator[FakeLaminiServer]:
    with FakeLaminiServer(api_key=KEY) as s:
        yield s


@pytest.fixture(autouse=True)
def _clean(server: FakeLaminiServer) -> None:
    server.reset()
    server.latency_s = 0.0
    server.responder = None
    server.job_plan = ("SCHEDULED", "RUNNING", "COMPLETED")


def call(
    server: FakeLaminiServer,
    path: str,
    body: Any = None,
    *,
    method: str | None = None,
    key: str | None = KEY,
    raw: bytes | None = None,
    timeout: float = 5.0,
) -> tuple[int, dict[str, str], Any]:
    """One HTTP request; returns (status, headers, decoded JSON or raw text)."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(server.url + path, data=data, method=method or ("POST" if data else "GET"))
    req.add_header("Content-Type", "application/json")
    if key is not None:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, headers, payload = resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        status, headers, payload = err.code, dict(err.headers), err.read()
    try:
        return status, headers, json.loads(payload)
    except ValueError:
        return status, headers, payload.decode()


def complete(server: FakeLaminiServer, **body: Any) -> Any:
    status, _, payload = call(server, "/v1/completions", {"model_name": "m", **body})
    assert status == 200, payload
    return payload


# ----------------------------------------------------------------------------- completions


def test_untyped_single_prompt_is_output_object_and_deterministic(server: FakeLaminiServer) -> None:
    first = complete(server, prompt="The sky is")
    assert set(first) == {"output"}
    assert isinstance(first["output"], str)
    assert first["output"].strip()
    assert complete(server, prompt="The sky is") == first
    assert complete(server, prompt="Something else") != first


def test_untyped_list_prompt_gives_list_in_order(server: FakeLaminiServer) -> None:
    out = complete(server, prompt=["a", "b", "c"])
    assert [o["output"] for o in out] == [fake_text(p) for p in ("a", "b", "c")]


def test_max_new_tokens_bounds_the_text(server: FakeLaminiServer) -> None:
    assert len(complete(server, prompt="x", max_new_tokens=3)["output"].split()) == 3


def test_typed_reply_has_schema_valid_values(server: FakeLaminiServer) -> None:
    output_type = {"answer": "str", "count": "int", "ratio": "float", "ok": "bool"}
    out = complete(server, prompt="q", output_type=output_type)
    assert list(out) == list(output_type)
    assert isinstance(out["answer"], str)
    assert out["answer"]
    assert type(out["count"]) is int
    assert 0 <= out["count"] < 100
    assert type(out["ratio"]) is float
    assert 0.0 <= out["ratio"] <= 1.0
    assert type(out["ok"]) is bool
    assert complete(server, prompt="q", output_type=output_type) == out


def test_typed_list_prompt(server: FakeLaminiServer) -> None:
    out = complete(server, prompt=["a", "b"], output_type={"answer": "str"})
    assert out == [{"answer": fake_value("str", p, "answer")} for p in ("a", "b")]


@pytest.mark.parametrize("type_name", LAMINI_TYPE_NAMES)
def test_every_lamini_type_name_is_accepted(server: FakeLaminiServer, type_name: str) -> None:
    out = complete(server, prompt="p", output_type={"v": type_name})
    assert type(out["v"]).__name__ == type_name


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"model_name": "m", "prompt": "p", "output_type": {"tags": "list"}}, 400, "unsupported type 'list'"),
        ({"model_name": "m", "prompt": "p", "output_type": {}}, 400, "non-empty object"),
        ({"prompt": "p"}, 422, "model_name"),
        ({"model_name": "m", "prompt": 3}, 422, "prompt"),
        ({"model_name": "m", "prompt": []}, 422, "prompt"),
    ],
)
def test_invalid_completion_requests_get_detail(
    server: FakeLaminiServer, body: dict[str, Any], status: int, needle: str
) -> None:
    got, _, payload = call(server, "/v1/completions", body)
    assert got == status
    assert needle in payload["detail"]


def test_invalid_json_body_is_422(server: FakeLaminiServer) -> None:
    status, _, payload = call(server, "/v1/completions", raw=b"{not json")
    assert status == 422
    assert "not valid JSON" in payload["detail"]


def test_unknown_path_404_and_wrong_method_405(server: FakeLaminiServer) -> None:
    assert call(server, "/v1/nope")[0] == 404
    assert call(server, "/v1/completions", method="GET")[0] == 405


def test_max_batch_and_models(server: FakeLaminiServer) -> None:
    with FakeLaminiServer(api_key=None, max_batch=2, models={"known"}) as s:
        status, _, payload = call(s, "/v1/completions", {"model_name": "known", "prompt": ["a", "b", "c"]})
        assert status == 400
        assert "over the limit of 2" in payload["detail"]
        status, _, payload = call(s, "/v1/completions", {"model_name": "other", "prompt": "a"})
        assert status == 594
        assert "'other' not found" in payload["detail"]


def test_body_over_limit_is_413(server: FakeLaminiServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fake_http, "MAX_BODY_BYTES", 100)
    status, _, _ = call(server, "/v1/completions", {"model_name": "m", "prompt": "x" * 200})
    assert status == 413


# ----------------------------------------------------------------------------- scripting and recording


def test_scripted_replies_text_typed_and_callable(server: FakeLaminiServer) -> None:
    server.script("hi", "hello there")
    server.script("typed", {"answer": 42})  # returned verbatim, even if it breaks the output_type
    server.script("fn", lambda prompt, ot: f"{prompt}:{sorted(ot) if ot else None}")
    assert complete(server, prompt="hi") == {"output": "hello there"}
    assert complete(server, prompt="typed", output_type={"answer": "str"}) == {"answer": 42}
    assert complete(server, prompt="fn", output_type={"b": "str", "a": "int"}) == "fn:['a', 'b']"
    server.responder = lambda prompt, ot: prompt.upper()
    assert complete(server, prompt=["x", "hi"]) == [{"output": "X"}, {"output": "hello there"}]


def test_requests_are_recorded(server: FakeLaminiServer) -> None:
    complete(server, prompt="p", max_new_tokens=5)
    call(server, "/v1/get-upload-base-path")
    rec = server.requests_to("/v1/completions")[0]
    assert rec.method == "POST"
    assert rec.body == {"model_name": "m", "prompt": "p", "max_new_tokens": 5}
    assert rec.header("authorization") == f"Bearer {KEY}"
    assert [r.path for r in server.requests] == ["/v1/completions", "/v1/get-upload-base-path"]
    assert server.last_request is not None
    assert server.last_request.method == "GET"
    assert server.requests_to("/v1/*", method="GET")[0].path == "/v1/get-upload-base-path"


def test_peak_concurrency_is_observed(server: FakeLaminiServer) -> None:
    import concurrent.futures

    server.latency_s = 0.2
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda p: complete(server, prompt=p), ["a", "b", "c"]))
    assert server.peak_concurrency == 3


# ----------------------------------------------------------------------------- auth


@pytest.mark.parametrize("key", [None, "wrong-key", ""])
def test_missing_or_wrong_key_is_401(server: FakeLaminiServer, key: str | None) -> None:
    status, _, payload = call(server, "/v1/completions", {"model_name": "m", "prompt": "p"}, key=key)
    assert status == 401
    assert "API key" in payload["detail"]


def test_any_key_accepted_when_api_key_is_none() -> None:
    with FakeLaminiServer(api_key=None) as s:
        assert call(s, "/v1/completions", {"model_name": "m", "prompt": "p"}, key="whatever")[0] == 200
        assert call(s, "/v1/completions", {"model_name": "m", "prompt": "p"}, key=None)[0] == 401


# ----------------------------------------------------------------------------- faults


def test_error_fault_with_detail_and_retry_after_for_n_requests(server: FakeLaminiServer) -> None:
    server.fail(429, "slow down", retry_after=1.5, times=2)
    for _ in range(2):
        status, headers, payload = call(server, "/v1/completions", {"model_name": "m", "prompt": "p"})
        assert (status, payload, headers["Retry-After"]) == (429, {"detail": "slow down"}, "1.5")
    assert call(server, "/v1/completions", {"model_name": "m", "prompt": "p"})[0] == 200


def test_fault_matches_path_glob_only(server: FakeLaminiServer) -> None:
    server.fail(503, "jobs down", path="/v1/train/jobs/*")
    assert call(server, "/v1/completions", {"model_name": "m", "prompt": "p"})[0] == 200
    assert call(server, "/v1/train/jobs/7")[0] == 503
    assert call(server, "/v1/train/jobs/7")[0] == 404  # fault used up; job 7 does not exist


def test_faults_apply_before_auth_and_in_order(server: FakeLaminiServer) -> None:
    server.fail(500, "first")
    server.fail(502, "second")
    assert call(server, "/v1/completions", {"model_name": "m", "prompt": "p"}, key="bad")[2] == {
        "detail": "first"
    }
    assert call(server, "/v1/completions", {"model_name": "m", "prompt": "p"})[2] == {"detail": "second"}


def test_delay_fault_then_normal_answer(server: FakeLaminiServer) -> None:
    server.inject(Fault.delay(0.3))
    start = time.monotonic()
    assert "output" in complete(server, prompt="p")
    assert time.monotonic() - start >= 0.3


def test_malformed_json_fault(server: FakeLaminiServer) -> None:
    server.inject(Fault.malformed_json())
    status, _, payload = call(server, "/v1/completions", {"model_name": "m", "prompt": "p"})
    assert status == 200
    assert isinstance(payload, str)
    assert payload.startswith('{"output": "this reply')


def test_drop_fault_closes_without_response(server: FakeLaminiServer) -> None:
    server.inject(Fault.drop())
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        call(server, "/v1/completions", {"model_name": "m", "prompt": "p"})
    assert complete(server, prompt="p")  # next request is fine


def test_stall_hits_client_timeout_and_stop_ends_it() -> None:
    s = FakeLaminiServer(max_stall_s=30).start()
    s.inject(Fault.stall())
    start = time.monotonic()
    with pytest.raises((TimeoutError, socket.timeout, urllib.error.URLError)):
        call(s, "/v1/completions", {"model_name": "m", "prompt": "p"}, timeout=0.3)
    s.stop()
    assert time.monotonic() - start < 5
    assert not s.running


def test_inject_validates_times(server: FakeLaminiServer) -> None:
    with pytest.raises(ValueError, match="times"):
        server.inject(Fault.drop(), times=0)


# ----------------------------------------------------------------------------- tuning over raw HTTP


def _train(server: FakeLaminiServer, data: list[dict[str, Any]]) -> int:
    _, _, base = call(server, "/v1/get-upload-base-path")
    status, _, up = call(
        server, "/v1/local-data", {"upload_base_path": base["upload_base_path"], "data": data}
    )
    assert status == 200
    assert set(up) == {"dataset_id", "dataset_location"}
    status, _, existing = call(
        server,
        "/v1/existing-data",
        {"dataset_id": up["dataset_id"], "upload_base_path": base["upload_base_path"]},
    )
    assert status == 200
    assert existing["dataset_location"] == up["dataset_location"]
    status, _, job = call(server, "/v1/train", {"model_name": "base", "dataset_id": up["dataset_id"]})
    assert status == 200
    assert job["status"] == server.job_plan[0]
    return int(job["job_id"])


DATA = [{"input": "What is 1+1?", "output": "2"}, {"input": "Capital of France?", "output": "Paris"}]


def test_job_status_moves_along_the_plan_then_eval(server: FakeLaminiServer) -> None:
    job_id = _train(server, DATA)
    assert call(server, f"/v1/train/jobs/{job_id}/eval")[0] == 400  # not completed yet
    statuses = [call(server, f"/v1/train/jobs/{job_id}")[2] for _ in range(4)]
    assert [s["status"] for s in statuses] == ["SCHEDULED", "RUNNING", "COMPLETED", "COMPLETED"]
    assert statuses[0]["model_name"] is None
    model = statuses[-1]["model_name"]
    assert isinstance(model, str)
    assert len(model) == 64
    status, _, ev = call(server, f"/v1/train/jobs/{job_id}/eval")
    assert status == 200
    assert ev["job_id"] == job_id
    assert [r["input"] for r in ev["eval_results"]] == [d["input"] for d in DATA]
    assert ev["eval_results"][1]["outputs"][0] == {"model_name": model, "output": "Paris"}
    assert ev["eval_results"][1]["outputs"][1]["model_name"] == "base"
    # the tuned model answers its training inputs with the training outputs
    assert complete(server, model_name=model, prompt="Capital of France?") == {"output": "Paris"}
    assert call(server, f"/v1/train/jobs/{job_id}/cancel", {})[0] == 400  # already completed
    assert call(server, "/v1/train/jobs")[2][0]["job_id"] == job_id


def test_failed_plan_and_cancel(server: FakeLaminiServer) -> None:
    server.job_plan = ("QUEUED", "FAILED")
    failed = _train(server, DATA)
    assert [call(server, f"/v1/train/jobs/{failed}")[2]["status"] for _ in range(3)] == [
        "QUEUED",
        "FAILED",
        "FAILED",
    ]
    server.job_plan = ("RUNNING",)
    running = _train(server, DATA[:1])
    status, _, reply = call(server, f"/v1/train/jobs/{running}/cancel", {})
    assert status == 200
    assert reply["status"] == "CANCELLED"
    assert call(server, f"/v1/train/jobs/{running}")[2]["status"] == "CANCELLED"


def test_train_with_inline_data_and_bad_requests(server: FakeLaminiServer) -> None:
    status, _, job = call(server, "/v1/train", {"model_name": "base", "data": DATA})
    assert status == 200
    assert server.jobs[job["job_id"]].data == DATA
    assert call(server, "/v1/train", {"model_name": "base", "dataset_id": "nope"})[0] == 400
    assert call(server, "/v1/train", {"dataset_id": "x"})[0] == 422
    assert call(server, "/v1/local-data", {"data": [{"input": "only"}]})[0] == 400
    assert call(server, "/v1/train/jobs/999")[0] == 404


def test_job_plan_must_not_be_empty(server: FakeLaminiServer) -> None:
    with pytest.raises(ValueError, match="job_plan"):
        server.job_plan = ()


# ----------------------------------------------------------------------------- lifecycle


def test_url_needs_a_running_server_and_stop_is_idempotent() -> None:
    s = FakeLaminiServer()
    with pytest.raises(RuntimeError, match="not running"):
        _ = s.url
    with s:
        assert s.url.startswith("http://127.0.0.1:")
        assert s.env() == {"LAMINI_API_URL": s.url, "LAMINI_API_KEY": "test-key"}
    s.stop()
    assert not s.running


def test_idle_server_stops_itself() -> None:
    s = FakeLaminiServer(idle_timeout_s=0.2).start()
    deadline = time.monotonic() + 5
    while s.running and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not s.running


def test_fixtures_give_a_clean_server(
    fake_lamini: FakeLaminiServer,
    fake_lamini_env: FakeLaminiServer,
) -> None:
    import os

    assert fake_lamini is fake_lamini_env
    assert fake_lamini.requests == []
    assert os.environ["LAMINI_API_URL"] == fake_lamini.url
    assert os.environ["LAMINI_API_KEY"] == "test-key"


# ----------------------------------------------------------------------------- the real lamini client


@pytest.fixture(scope="module")
def lamini_mod() -> Any:
    return pytest.importorskip("lamini", reason="the lamini client is an optional extra")


def test_lamini_client_generate(server: FakeLaminiServer, lamini_mod: Any) -> None:
    llm = lamini_mod.Lamini("m", api_key=KEY, api_url=server.url)
    assert llm.generate("p") == fake_text("p")
    assert llm.generate(["a", "b"]) == [fake_text("a"), fake_text("b")]
    assert llm.generate("p", output_type={"n": "int"}) == {"n": fake_value("int", "p", "n")}
    assert server.last_request is not None
    assert server.last_request.header("Lamini-Version")


async def test_lamini_client_async_completion(server: FakeLaminiServer, lamini_mod: Any) -> None:
    from lamini.api.utils.completion import Completion

    completion = Completion(KEY, server.url)
    params = completion.make_llm_req_map(model_name="m", prompt=["a", "b"], output_type={"ok": "bool"})
    assert await completion.async_generate(params) == [
        {"ok": fake_value("bool", p, "ok")} for p in ("a", "b")
    ]


@pytest.mark.parametrize(
    ("status", "error_name"),
    [
        (400, "UserError"),
        (401, "AuthenticationError"),
        (422, "UserError"),
        (429, "RateLimitError"),
        (503, "UnavailableResourceError"),
        (594, "ModelNotFoundError"),
        (500, "APIError"),
    ],
)
def test_lamini_client_maps_fault_statuses(
    server: FakeLaminiServer, lamini_mod: Any, status: int, error_name: str
) -> None:
    from lamini.error import error

    server.fail(status, "the detail")
    with pytest.raises(getattr(error, error_name)) as info:
        lamini_mod.Lamini("m", api_key=KEY, api_url=server.url).generate("p")
    if status not in (500,):
        assert str(info.value) == "the detail"


def test_lamini_client_tuning_flow(
    server: FakeLaminiServer, lamini_mod: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    llm = lamini_mod.Lamini("base-model", api_key=KEY, api_url=server.url)
    job = llm.train(DATA, finetune_args={"max_steps": 10})
    paths = [r.path for r in server.requests]
    assert paths == [
        "/v1/get-upload-base-path",
        "/v1/local-data",
        "/v1/get-upload-base-path",
        "/v1/existing-data",
        "/v1/train",
    ]
    assert server.jobs[job["job_id"]].finetune_args == {"max_steps": 10}
    statuses = [llm.check_job_status(job["job_id"])["status"] for _ in range(3)]
    assert statuses == ["SCHEDULED", "RUNNING", "COMPLETED"]
    results = llm.evaluate(job["job_id"])["eval_results"]
    assert results[0]["outputs"][0]["output"] == "2"
    tuned = lamini_mod.Lamini(
        llm.check_job_status(job["job_id"])["model_name"], api_key=KEY, api_url=server.url
    )
    assert tuned.generate("What is 1+1?") == "2"
    server.job_plan = ("RUNNING",)
    job2 = llm.train(DATA)
    assert llm.cancel_job(job2["job_id"])["status"] == "CANCELLED"
    assert llm.check_job_status(job2["job_id"])["status"] == "CANCELLED"
    capsys.readouterr()  # the client prints progress; keep the test output clean
