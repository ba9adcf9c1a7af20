"""Shared test setup: llmrun's own fixtures, and no test reaches beyond this machine."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

import pytest

pytest_plugins = ["llmrun.testing.fixtures"]


@pytest.fixture(autouse=True)
def _isolated_settings(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Tests never see the developer's llmrun settings or config file."""
    import os

    for name in list(os.environ):
        if name.startswith("LLMRUN_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("LLMRUN_CONFIG", "")
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> None:
    """The test models are tiny: a second thread only adds contention on a busy 2-core CI machine."""
    try:
        import torch
    except ImportError:  # the core tests run without the local extra
        return
    torch.set_num_threads(1)


@pytest.fixture
def ctrl_c() -> Iterator[None]:
    """Python's own Ctrl-C handling for the test, whatever the process started with.

    A shell that starts the test run in the background (``cmd &``) makes it ignore SIGINT;
    the Ctrl-C tests would then wait for an interrupt that never comes.
    """
    import signal

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class ServeTarget(NamedTuple):
    """Where :func:`llmrun_serve` listens: its OpenAI root URL, the model it serves, its key."""

    base_url: str
    model: str
    api_key: str


@pytest.fixture(scope="session")
def llmrun_serve(tiny_checkpoint_dirs: dict[str, Any]) -> Iterator[ServeTarget]:
    """A real ``llmrun serve`` for the whole session: the tiny GPT-NeoX checkpoint served as
    ``meta-llama/Llama-2-7b-hf`` (the name the fakes use) with ``--chat-template plain``, auth on,
    on 127.0.0.1 and a free port.

    Shared by the conformance suite and the one-function test; tests/serve starts its own.
    """
    pytest.importorskip("torch")
    pytest.importorskip("starlette", reason="llmrun serve needs the serve extra")
    pytest.importorskip("uvicorn", reason="llmrun serve needs the serve extra")
    from llmrun.serve import ServeSettings, create_app
    from llmrun.serve.launch import BackgroundServer, load_engine

    target = ServeTarget("", "meta-llama/Llama-2-7b-hf", "serve-key")
    settings = ServeSettings(port=0, api_key=target.api_key, max_batch_size=8, chat_template="plain")
    engine = load_engine(str(tiny_checkpoint_dirs["gpt_neox"]), settings, device="cpu")
    server = BackgroundServer(create_app(engine, settings, target.model), settings).start()
    try:
        yield target._replace(base_url=server.url + "/v1")
    finally:
        server.stop()


@pytest.fixture(scope="module", params=["byte-level-bpe", "sentencepiece-style"])
def tokenizer(request: pytest.FixtureRequest) -> Any:
    """A tiny trained tokenizer of each kind the grammar tests cover (byte-level BPE, SentencePiece-like)."""
    from llmrun.testing.checkpoints import train_byte_level_bpe_tokenizer, train_sentencepiece_style_tokenizer

    if request.param == "byte-level-bpe":
        return train_byte_level_bpe_tokenizer(512)
    return train_sentencepiece_style_tokenizer(512)
