"""One ``runner`` fixture, parametrized over every backend the conformance suite checks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import llmrun
from llmrun.runner import ModelRunner
from llmrun.testing.openai_server import FakeOpenAIServer

BACKENDS = [
    "fake",
    "local-gpt_neox",
    "local-llama",
    "lamini",
    "openai-vllm",
    "openai-generic",
    "serve-llmrun",
    "serve-auto",
    "serve-chat",
]


@pytest.fixture(scope="module", params=BACKENDS)
def runner(request: pytest.FixtureRequest) -> Iterator[ModelRunner]:
    kind: str = request.param
    if kind == "fake":
        yield llmrun.load("fake-model", backend="fake")
    elif kind.startswith("local-"):
        dirs: dict[str, Path] = request.getfixturevalue("tiny_checkpoint_dirs")
        yield llmrun.load(str(dirs[kind.removeprefix("local-")]), backend="local", device="cpu")
    elif kind.startswith("openai-"):
        # the fake plays the server; "generic" does not enforce the schema (replies validated, re-asked)
        profile = kind.removeprefix("openai-")
        with FakeOpenAIServer(profile=profile, models={"meta-llama/Llama-2-7b-hf"}) as server:
            yield llmrun.load(
                "meta-llama/Llama-2-7b-hf", backend="openai", base_url=server.base_url, api_key="test-key"
            )
    elif kind.startswith("serve-"):
        # the openai backend on a real `llmrun serve` (one per session): profile named, detected
        # from GET /v1/models' owned_by, or named and on /v1/chat/completions
        serve = request.getfixturevalue("llmrun_serve")
        how = kind.removeprefix("serve-")
        yield llmrun.load(
            serve.model,
            backend="openai",
            base_url=serve.base_url,
            api_key=serve.api_key,
            profile="auto" if how == "auto" else "llmrun",
            chat=how == "chat",
        )
    else:
        server = request.getfixturevalue("fake_lamini_server")
        yield llmrun.load(
            "meta-llama/Llama-2-7b-hf", backend="lamini", api_key="test-key", api_url=server.url
        )
