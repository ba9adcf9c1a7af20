"""A real ``llmrun serve`` app on a tiny checkpoint, served by uvicorn on 127.0.0.1 and a free port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from llmrun.backends.local.engine import LocalEngine
from llmrun.serve import ServeSettings, create_app
from llmrun.serve.launch import BackgroundServer, load_engine

API_KEY = "serve-test-key"
MODEL = "tiny-neox"
#: A minimal chat template (the tiny tokenizer has none): one line per message, then the assistant's turn.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@pytest.fixture(scope="session")
def serve_engine(tiny_checkpoint_dirs: dict[str, Path]) -> LocalEngine:
    """The tiny GPT-NeoX checkpoint's engine, with a chat template set on its tokenizer."""
    engine = load_engine(str(tiny_checkpoint_dirs["gpt_neox"]), ServeSettings(max_batch_size=8), device="cpu")
    engine.tokenizer.chat_template = CHAT_TEMPLATE
    return engine


def start_server(engine: LocalEngine, model: str = MODEL, **settings: Any) -> BackgroundServer:
    """A started server on a free loopback port (stop it after)."""
    chosen = ServeSettings(**{"port": 0, "api_key": API_KEY, "max_batch_size": 8, **settings})
    return BackgroundServer(create_app(engine, chosen, model), chosen).start()


@pytest.fixture(scope="module")
def server(serve_engine: LocalEngine) -> Iterator[BackgroundServer]:
    """One server per test module, with auth on."""
    running = start_server(serve_engine)
    try:
        yield running
    finally:
        running.stop()
