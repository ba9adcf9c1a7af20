"""Issue 14's "done when": one user function runs on ``local``, ``lamini`` and ``openai`` by changing
only the environment (``LLMRUN_BACKEND``, the URL and the model), with valid typed results on all three,
and against a server that ignores schemas the re-asking path returns valid objects."""

from __future__ import annotations

from pathlib import Path

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
