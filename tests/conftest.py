"""Shared test setup: llmrun's own fixtures, and no test reaches beyond this machine."""

from __future__ import annotations

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
