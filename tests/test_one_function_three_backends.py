"""Issue 14's "done when": one user function runs on ``local``, ``lamini`` and ``openai`` by changing
only the environment (``LLMRUN_BACKEND``, the URL and the model), with valid typed results on all three
(``openai`` against the fake, per profile, and against a real ``llmrun serve``),
and against a server that ignores schemas the re-asking path returns valid objects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import llmrun
from llmrun import Context, Type
from llmrun.testing.lamini_server import FakeLaminiServer
from llmrun.testing.openai_server import FakeOpenAIServer


class Question(Type):
    question: str = Context("a question about the world")


class Answer(Type):
    answer: str = Context("a short factual answer")
    confidence: float = Context("how sure the answer is, 0 to 1", ge=0, le=1)


QUESTIONS = [Question(question=q) for q in ("Who wrote Hamlet?", "What is 2 + 2?")]


def user_function() -> list[Answer]:
    """What a user writes once: no backend, URL or key in the code."""
    runner = llmrun.load()
    return runner(QUESTIONS, output_type=Answer, max_new_tokens=64)


def _check(answers: list[Answer]) -> None:
    assert [type(a) for a in answers] == [Answer, Answer]
    assert all(0 <= a.confidence <= 1 for a in answers)


def test_local(tiny_gpt_neox_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMRUN_BACKEND", "local")
    monkeypatch.setenv("LLMRUN_MODEL", str(tiny_gpt_neox_dir))
    _check(user_function())


def test_lamini(fake_lamini_env: FakeLaminiServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMRUN_BACKEND", "lamini")
    monkeypatch.setenv("LLMRUN_MODEL", "meta-llama/Llama-2-7b-hf")
    _check(user_function())


@pytest.mark.parametrize("profile", ["vllm", "llamacpp", "ollama", "sglang", "llmrun"])
def test_openai(fake_openai_env: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch, profile: str) -> None:
    fake_openai_env.profile = profile
    fake_openai_env.models = {"meta-llama/Llama-2-7b-hf"}
    monkeypatch.setenv("LLMRUN_MODEL", "meta-llama/Llama-2-7b-hf")
    _check(user_function())


def test_openai_on_llmrun_serve(llmrun_serve: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same function on a real ``llmrun serve`` (profile detected from ``GET /v1/models``)."""
    monkeypatch.setenv("LLMRUN_BACKEND", "openai")
    monkeypatch.setenv("LLMRUN_BASE_URL", llmrun_serve.base_url)
    monkeypatch.setenv("LLMRUN_API_KEY", llmrun_serve.api_key)
    monkeypatch.setenv("LLMRUN_MODEL", llmrun_serve.model)
    _check(user_function())


class Fact(Type):
    answer: str = Context("a short factual answer")
    year: int = Context("the year it happened")


def test_lamini_backend_on_llmrun_serve(llmrun_serve: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The lamini backend on the same server's Lamini wire: only the URL changes from Lamini's cloud.

    Not with ``Answer``: Lamini's ``output_type`` carries field types only, not ``ge``/``le``, so
    a server that enforces it (as ``llmrun serve`` does) cannot keep ``confidence`` in 0..1.
    """
    monkeypatch.setenv("LLMRUN_BACKEND", "lamini")
    monkeypatch.setenv("LAMINI_API_URL", llmrun_serve.base_url.removesuffix("/v1"))
    monkeypatch.setenv("LAMINI_API_KEY", llmrun_serve.api_key)
    monkeypatch.setenv("LLMRUN_MODEL", llmrun_serve.model)
    facts = llmrun.load()(QUESTIONS, output_type=Fact, max_new_tokens=64)
    assert [type(f) for f in facts] == [Fact, Fact]


def test_openai_server_that_ignores_schemas(
    fake_openai_env: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_openai_env.models = {"meta-llama/Llama-2-7b-hf"}
    fake_openai_env.ignore_schema = True
    monkeypatch.setenv("LLMRUN_MODEL", "meta-llama/Llama-2-7b-hf")
    _check(user_function())
    first_tries = [
        r for r in fake_openai_env.requests_to("/v1/chat/completions") if len(r.body["messages"]) == 1
    ]
    assert len(first_tries) == 2
    assert len(fake_openai_env.requests_to("/v1/chat/completions")) == 4  # each asked again once
