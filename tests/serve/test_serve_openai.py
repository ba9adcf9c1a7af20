"""The real ``openai`` client against ``llmrun serve``: completions, chat, typed JSON, streaming, errors."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

pytest.importorskip("openai")
pytest.importorskip("requests")
pytest.importorskip("jsonschema")

import jsonschema
import openai
import requests

from llmrun.backends.local.engine import LocalEngine
from llmrun.generation import GenerationConfig
from llmrun.runner import Completion, CompletionRequest
from llmrun.serve.launch import BackgroundServer

from .conftest import API_KEY, MODEL

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 12},
        "population": {"type": "integer", "minimum": 0},
        "capital": {"type": "boolean"},
        "kind": {"enum": ["town", "city"]},
    },
    "required": ["city", "population", "capital", "kind"],
    "additionalProperties": False,
}


def alone(engine: LocalEngine, prompt: str, **config: Any) -> Completion:
    return engine.generate(CompletionRequest((prompt,), GenerationConfig(**config)))[0]


@pytest.fixture(scope="module")
def client(server: BackgroundServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=API_KEY, max_retries=0, timeout=60)


def chat_prompt(text: str) -> str:
    return f"<|user|>{text}\n<|assistant|>"  # what conftest's chat template renders


def test_models_lists_the_served_model(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == [MODEL]


def test_completions_are_the_engines_own_with_usage(client: openai.OpenAI, serve_engine: LocalEngine) -> None:
    prompts = ["The highest mountain in the world is", "Hello"]
    reply = client.completions.create(model=MODEL, prompt=prompts, max_tokens=7, temperature=0, n=2)
    assert [c.index for c in reply.choices] == [0, 1, 2, 3]
    expected = [alone(serve_engine, p, max_new_tokens=7) for p in prompts]
    assert [c.text for c in reply.choices] == [e.text for e in expected for _ in range(2)]
    assert [c.finish_reason for c in reply.choices] == [e.finish_reason for e in expected for _ in range(2)]
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == sum(e.usage.prompt_tokens or 0 for e in expected)
    assert reply.usage.completion_tokens == 2 * sum(e.usage.completion_tokens or 0 for e in expected)


def test_stop_sequences_end_the_text_before_them(client: openai.OpenAI, serve_engine: LocalEngine) -> None:
    prompt = "Once upon a time there was a"
    full = alone(serve_engine, prompt, max_new_tokens=12).text
    stop = full.strip()[3:6]
    assert stop
    assert stop in full
    reply = client.completions.create(model=MODEL, prompt=prompt, max_tokens=12, temperature=0, stop=[stop])
    assert reply.choices[0].text == full[: full.index(stop)]
    assert reply.choices[0].finish_reason == "stop"


def test_seeded_sampling_repeats(client: openai.OpenAI) -> None:
    def sample() -> str:
        reply = client.completions.create(
            model=MODEL, prompt="Names:", max_tokens=8, temperature=0.9, top_p=0.95, seed=7
        )
        return reply.choices[0].text

    assert sample() == sample()


def test_chat_goes_through_the_chat_template(client: openai.OpenAI, serve_engine: LocalEngine) -> None:
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi there"}], max_tokens=6, temperature=0
    )
    expected = alone(serve_engine, chat_prompt("Hi there"), max_new_tokens=6)
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content == expected.text
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == expected.usage.prompt_tokens


def test_json_schema_answers_are_valid(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Describe a city as JSON."}],
        temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "City", "schema": SCHEMA}},
    )
    assert reply.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(reply.choices[0].message.content or ""), SCHEMA)


def test_json_object_output_is_constrained_to_json(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "JSON please"}],
        temperature=0,
        max_tokens=24,
        response_format={"type": "json_object"},
    )
    content = reply.choices[0].message.content or ""
    assert content.startswith("{")
    if reply.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(content), dict)


def test_chat_streams_deltas_that_join_to_the_answer(client: openai.OpenAI) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]
    whole = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=10, temperature=0)
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=messages,
            max_tokens=10,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason]
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_completions_stream_several_choices(client: openai.OpenAI, serve_engine: LocalEngine) -> None:
    stream = client.completions.create(
        model=MODEL, prompt="1, 2, 3,", max_tokens=6, temperature=0, n=2, stream=True
    )
    texts = ["", ""]
    for chunk in stream:
        for choice in chunk.choices:
            texts[choice.index] += choice.text
    assert texts == [alone(serve_engine, "1, 2, 3,", max_new_tokens=6).text] * 2


@pytest.mark.parametrize(
    ("options", "param", "words"),
    [
        ({"temperature": 3.0}, "temperature", "number in [0, 2]"),
        ({"top_p": 0}, "top_p", "(0, 1]"),
        ({"max_tokens": 0}, "max_tokens", "integer >= 1"),
        ({"n": 99}, "n", "1..16"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "at most 4"),
        ({"logprobs": True}, "logprobs", "not supported"),
        ({"seed": "7"}, "seed", "must be an integer"),
    ],
)
def test_bad_sampling_values_are_400_naming_them(
    client: openai.OpenAI, options: dict[str, Any], param: str, words: str
) -> None:
    with pytest.raises(openai.BadRequestError, match=re.escape(words)) as caught:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], **options)
    assert caught.value.body["param"] == param  # type: ignore[index]


def test_bad_requests_get_clear_4xx(client: openai.OpenAI, server: BackgroundServer) -> None:
    with pytest.raises(openai.NotFoundError, match="not served here"):
        client.completions.create(model="gpt-4", prompt="hi")
    bad_schema = {"type": "json_schema", "json_schema": {"name": "X", "schema": {"type": "nonsense"}}}
    with pytest.raises(openai.BadRequestError, match="not a valid JSON Schema"):
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], response_format=bad_schema
        )
    with pytest.raises(openai.BadRequestError, match="response_format type 'yaml'"):
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], response_format={"type": "yaml"}
        )
    with pytest.raises(openai.BadRequestError, match="exceeds the model's context") as caught:
        client.completions.create(model=MODEL, prompt="word " * 600, max_tokens=4)
    assert caught.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError, match="role='tool' is not supported"):
        client.chat.completions.create(model=MODEL, messages=[{"role": "tool", "content": "x"}])
    with pytest.raises(openai.AuthenticationError, match="API key is wrong"):
        openai.OpenAI(base_url=server.url + "/v1", api_key="nope", max_retries=0).models.list()

    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    url = server.url + "/v1/chat/completions"
    reply = requests.post(url, data=b'{"model": "tiny', headers=headers, timeout=30)
    assert reply.status_code == 400
    assert "not valid JSON" in reply.json()["error"]["message"]
    reply = requests.post(url, data=b"[1, 2]", headers=headers, timeout=30)
    assert reply.status_code == 400
    assert "must be a JSON object" in reply.json()["error"]["message"]
    huge = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "x" * (5 * 1024 * 1024)}]})
    reply = requests.post(url, data=huge, headers=headers, timeout=30)
    assert reply.status_code == 413
    assert "limit" in reply.json()["error"]["message"]
    assert requests.get(server.url + "/nowhere", headers=headers, timeout=30).status_code == 404
