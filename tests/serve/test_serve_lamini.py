"""The real ``lamini`` client against ``llmrun serve``: typed, untyped, batched, and the errors it maps."""

from __future__ import annotations

import pytest

pytest.importorskip("lamini")
pytest.importorskip("requests")

import lamini
import requests
from lamini.error import error as lamini_errors

from llmrun.backends.local.engine import LocalEngine
from llmrun.generation import GenerationConfig
from llmrun.runner import CompletionRequest
from llmrun.serve.launch import BackgroundServer

from .conftest import API_KEY, MODEL


def alone(engine: LocalEngine, prompt: str, max_new_tokens: int) -> str:
    """What the engine answers to ``prompt`` by itself (greedy, as the Lamini wire decodes)."""
    request = CompletionRequest((prompt,), GenerationConfig(max_new_tokens=max_new_tokens))
    return engine.generate(request)[0].text


def client(server: BackgroundServer, key: str = API_KEY) -> lamini.Lamini:
    return lamini.Lamini(MODEL, api_key=key, api_url=server.url)


def test_untyped_and_batched_answers_are_the_engines_own(
    server: BackgroundServer, serve_engine: LocalEngine
) -> None:
    llm = client(server)
    assert llm.generate("Question: What is the capital of France? Answer:", max_new_tokens=6) == alone(
        serve_engine, "Question: What is the capital of France? Answer:", 6
    )
    prompts = ["Hello", "The weather today is", "1, 2, 3,"]
    assert llm.generate(prompts, max_new_tokens=5) == [alone(serve_engine, p, 5) for p in prompts]


def test_typed_output_is_an_object_of_the_asked_types(server: BackgroundServer) -> None:
    output_type = {"answer": "str", "score": "int", "confidence": "float", "ok": "bool"}
    reply = client(server).generate(
        "Question: What is 12 times 12?", output_type=output_type, max_new_tokens=120
    )
    assert isinstance(reply, dict)
    assert list(reply) == list(output_type)
    assert isinstance(reply["answer"], str)
    assert isinstance(reply["score"], int)
    assert not isinstance(reply["score"], bool)
    assert isinstance(reply["confidence"], int | float)
    assert isinstance(reply["ok"], bool)
    replies = client(server).generate(["a", "b"], output_type={"answer": "str"}, max_new_tokens=60)
    assert [list(r) for r in replies] == [["answer"], ["answer"]]


def test_max_tokens_counts_the_prompt(server: BackgroundServer, serve_engine: LocalEngine) -> None:
    prompt = "Once upon a time"
    used = len(serve_engine.tokenizer(prompt)["input_ids"])
    assert client(server).generate(prompt, max_tokens=used + 4) == alone(serve_engine, prompt, 4)
    with pytest.raises(lamini_errors.UserError, match="leaves no room"):
        client(server).generate(prompt, max_tokens=used)


def test_errors_map_to_the_clients_exceptions(server: BackgroundServer) -> None:
    with pytest.raises(lamini_errors.AuthenticationError, match="API key is wrong"):
        client(server, key="wrong").generate("hi", max_new_tokens=2)
    with pytest.raises(lamini_errors.UserError, match="unsupported type 'list'"):
        client(server).generate("hi", output_type={"answer": "list"})
    with pytest.raises(lamini_errors.ModelNotFoundError, match="not served here"):
        lamini.Lamini("other-model", api_key=API_KEY, api_url=server.url).generate("hi")
    with pytest.raises(lamini_errors.UserError, match="context"):
        client(server).generate("word " * 600, max_new_tokens=4)
    reply = requests.post(
        server.url + "/v1/completions",
        json={"model_name": MODEL, "prompt": "hi", "max_new_tokens": "5"},
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=30,
    )
    assert reply.status_code == 400
    assert "max_new_tokens='5' is invalid" in reply.json()["detail"]


def test_tuning_is_not_served_and_says_what_to_do(server: BackgroundServer) -> None:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    reply = requests.post(server.url + "/v1/train", json={"model_name": MODEL}, headers=headers, timeout=30)
    assert reply.status_code == 501
    assert "llmrun train" in reply.json()["detail"]
    assert requests.get(server.url + "/v1/version", headers=headers, timeout=30).json()["server_version"]
