"""Shared test setup: llmrun's own fixtures, and no test reaches beyond this machine."""

from __future__ import annotations

from collections.abc import Iterator

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
