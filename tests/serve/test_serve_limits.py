"""What a shared box needs: no mix-ups under load, 429, timeouts, disconnects, shutdown, health, metrics."""

from __future__ import annotations

import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

pytest.importorskip("openai")
pytest.importorskip("lamini")

import lamini
import openai
import requests
from lamini.error import error as lamini_errors

from llmrun.backends.local.engine import LocalEngine
from llmrun.generation import GenerationConfig
from llmrun.runner import CompletionRequest
from llmrun.serve.launch import BackgroundServer

from .conftest import API_KEY, MODEL, start_server

HEADERS = {"Authorization": f"Bearer {API_KEY}"}
#: A prompt the tiny model answers with 450 tokens and no end-of-sequence (checked by `long_prompt`).
LONG_BUDGET = 450


def alone(engine: LocalEngine, prompt: str, n: int) -> str:
    return engine.generate(CompletionRequest((prompt,), GenerationConfig(max_new_tokens=n)))[0].text


def metric(server: BackgroundServer, name: str, **labels: str) -> float:
    """A metric's value from /metrics (0 when absent)."""
    text = requests.get(server.url + "/metrics", headers=HEADERS, timeout=30).text
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        m = re.match(rf"^{name}(?:\{{(.*)\}})? (\S+)$", line)
        if m and ",".join(sorted((m.group(1) or "").split(","))) == want:
            return float(m.group(2))
    return 0.0


def wait_idle(server: BackgroundServer, seconds: float = 20.0) -> None:
    scheduler = server.app.state.llmrun.scheduler
    end = time.monotonic() + seconds
    while scheduler.depth != (0, 0) and time.monotonic() < end:
        time.sleep(0.02)
    assert scheduler.depth == (0, 0)


@pytest.fixture(scope="module")
def long_prompt(serve_engine: LocalEngine) -> str:
    """A prompt the tiny model answers with LONG_BUDGET tokens (no end-of-sequence on the way)."""
    config = GenerationConfig(max_new_tokens=LONG_BUDGET)
    for prompt in ("Hello", "1, 2, 3,", "Names:", "The weather today is", "Once upon a time"):
        if serve_engine.generate(CompletionRequest((prompt,), config))[0].finish_reason == "length":
            return prompt
    raise AssertionError("the cancellation tests need a prompt that runs to its budget; none here does")


def test_concurrent_clients_of_both_wires_each_get_their_own_answer(
    server: BackgroundServer, serve_engine: LocalEngine
) -> None:
    prompts = [f"Question {i}: what is {i} plus {i}? Answer:" for i in range(12)]
    expected = {p: alone(serve_engine, p, 8) for p in prompts}
    oa = openai.OpenAI(base_url=server.url + "/v1", api_key=API_KEY, max_retries=0)
    llm = lamini.Lamini(MODEL, api_key=API_KEY, api_url=server.url)

    def ask(i: int) -> tuple[str, Any]:
        prompt = prompts[i]
        if i % 3 == 0:
            return prompt, llm.generate(prompt, max_new_tokens=8)
        if i % 3 == 1:
            typed = llm.generate(prompt, output_type={"answer": "str", "n": "int"}, max_new_tokens=80)
            return prompt, typed
        reply = oa.completions.create(model=MODEL, prompt=prompt, max_tokens=8, temperature=0)
        return prompt, reply.choices[0].text

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(ask, range(12)))
    for i, (prompt, answer) in enumerate(answers):
        assert prompt == prompts[i]
        if i % 3 == 1:
            assert set(answer) == {"answer", "n"}
        else:
            assert answer == expected[prompt]
    wait_idle(server)


def test_a_full_queue_answers_429_with_retry_after(serve_engine: LocalEngine, long_prompt: str) -> None:
    small = start_server(serve_engine, max_queue=2, max_batch_size=1)
    try:
        oa = openai.OpenAI(base_url=small.url + "/v1", api_key=API_KEY, max_retries=0)
        with pytest.raises(openai.RateLimitError, match="queue is full") as caught:
            oa.completions.create(model=MODEL, prompt="hi", max_tokens=4, n=3)
        assert int(caught.value.response.headers["Retry-After"]) >= 1
        body = {
            "model": MODEL,
            "prompt": long_prompt,
            "max_tokens": LONG_BUDGET,
            "temperature": 0,
            "stream": True,
        }
        with requests.post(
            small.url + "/v1/completions", json=body, headers=HEADERS, stream=True, timeout=30
        ) as r:
            lines = r.iter_lines()
            next(lines)  # one row runs; two more do not fit
            with pytest.raises(lamini_errors.RateLimitError, match="queue is full"):
                lamini.Lamini(MODEL, api_key=API_KEY, api_url=small.url).generate(
                    ["a", "b"], max_new_tokens=2
                )
        wait_idle(small)
        assert oa.completions.create(model=MODEL, prompt="hi", max_tokens=4, n=2).choices  # room again
        assert metric(small, "llmrun_serve_rejected_total") == 2
    finally:
        small.stop()


def test_a_request_past_its_timeout_is_cancelled(serve_engine: LocalEngine, long_prompt: str) -> None:
    hasty = start_server(serve_engine, timeout_s=0.05)
    try:
        oa = openai.OpenAI(base_url=hasty.url + "/v1", api_key=API_KEY, max_retries=0)
        with pytest.raises(openai.APIStatusError, match="timeout") as caught:
            oa.completions.create(model=MODEL, prompt=long_prompt, max_tokens=LONG_BUDGET, temperature=0)
        assert caught.value.status_code == 504
        with pytest.raises(lamini_errors.RequestTimeoutError):
            lamini.Lamini(MODEL, api_key=API_KEY, api_url=hasty.url).generate(
                long_prompt, max_new_tokens=LONG_BUDGET
            )
        wait_idle(hasty)
        assert metric(hasty, "llmrun_serve_cancelled_rows_total", why="timeout") == 2
    finally:
        hasty.stop()


def test_a_client_that_disconnects_cancels_its_row(server: BackgroundServer, long_prompt: str) -> None:
    before = metric(server, "llmrun_serve_cancelled_rows_total", why="disconnect")
    body = {
        "model": MODEL,
        "prompt": long_prompt,
        "max_tokens": LONG_BUDGET,
        "temperature": 0,
        "stream": True,
    }
    with requests.post(
        server.url + "/v1/completions", json=body, headers=HEADERS, stream=True, timeout=30
    ) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        next(lines)  # generation has started
        assert server.app.state.llmrun.scheduler.depth == (0, 1)
    wait_idle(server)
    assert metric(server, "llmrun_serve_cancelled_rows_total", why="disconnect") == before + 1

    # the same without streaming: the client gives up before the answer
    host, port = server.url.removeprefix("http://").split(":")
    payload = (
        f'{{"model": "{MODEL}", "prompt": "{long_prompt}", "max_tokens": {LONG_BUDGET}, "temperature": 0}}'
    ).encode()
    with socket.create_connection((host, int(port))) as sock:
        head = (
            f"POST /v1/completions HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {API_KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
        )
        sock.sendall(head.encode() + payload)
        end = time.monotonic() + 10
        while server.app.state.llmrun.scheduler.depth == (0, 0) and time.monotonic() < end:
            time.sleep(0.005)
    wait_idle(server)
    assert metric(server, "llmrun_serve_cancelled_rows_total", why="disconnect") == before + 2


def test_health_is_open_and_metrics_need_the_key(server: BackgroundServer) -> None:
    health = requests.get(server.url + "/health", timeout=30)
    assert health.status_code == 200
    assert health.json()["model"] == MODEL
    assert requests.get(server.url + "/metrics", timeout=30).status_code == 401
    text = requests.get(server.url + "/metrics", headers=HEADERS, timeout=30).text
    for name in (
        "llmrun_serve_queue_depth",
        "llmrun_serve_tokens_per_second",
        "llmrun_serve_request_latency",
    ):
        assert name in text
    assert metric(server, "llmrun_serve_generated_tokens_total") > 0


def test_shutdown_lets_in_flight_requests_finish(serve_engine: LocalEngine, long_prompt: str) -> None:
    closing = start_server(serve_engine, shutdown_grace_s=20)
    oa = openai.OpenAI(base_url=closing.url + "/v1", api_key=API_KEY, max_retries=0)
    answers: list[Any] = []

    def ask() -> None:
        answers.append(
            oa.completions.create(model=MODEL, prompt=long_prompt, max_tokens=LONG_BUDGET, temperature=0)
        )

    asking = threading.Thread(target=ask)
    asking.start()
    scheduler = closing.app.state.llmrun.scheduler
    end = time.monotonic() + 10
    while scheduler.depth == (0, 0) and time.monotonic() < end:
        time.sleep(0.005)
    assert scheduler.depth == (0, 1)
    closing.stop()  # while the row runs
    asking.join(30)
    assert len(answers) == 1
    assert answers[0].choices[0].finish_reason == "length"
    assert answers[0].usage.completion_tokens == LONG_BUDGET
    assert not scheduler.accepting
    with pytest.raises(openai.APIConnectionError):
        oa.models.list()
