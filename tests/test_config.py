from __future__ import annotations

from pathlib import Path

import pytest

import llmrun
from llmrun.errors import BackendNotFoundError, ConfigurationError
from llmrun.registry import available_backends, get_backend, register_backend
from llmrun.runner import CompletionRequest, ModelRunner
from llmrun.testing import FakeRunner


def test_default_backend_and_model(monkeypatch: pytest.MonkeyPatch) -> None:
    from llmrun.config import resolve_backend_and_model

    assert resolve_backend_and_model(None, None, {}) == ("local", "EleutherAI/pythia-70m")


def test_env_selects_backend_and_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMRUN_BACKEND", "fake")
    monkeypatch.setenv("LLMRUN_SEED", "7")
    monkeypatch.setenv("LLMRUN_DELAY", "0.0")
    runner = llmrun.load("m")
    assert isinstance(runner, FakeRunner)
    assert (runner.seed, runner.delay) == (7, 0.0)


def test_explicit_beats_env_beats_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "llmrun.toml"
    config.write_text('backend = "fake"\nmodel = "from-file"\n[fake]\nseed = 1\ndelay = 0.5\n')
    monkeypatch.setenv("LLMRUN_CONFIG", str(config))
    runner = llmrun.load()
    assert isinstance(runner, FakeRunner)
    assert (runner.model_name, runner.seed, runner.delay) == ("from-file", 1, 0.5)
    monkeypatch.setenv("LLMRUN_SEED", "2")
    assert llmrun.load().seed == 2  # type: ignore[attr-defined]
    assert llmrun.load(seed=3).seed == 3  # type: ignore[attr-defined]


def test_config_file_in_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLMRUN_CONFIG")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "llmrun.toml").write_text('backend = "fake"\n')
    assert isinstance(llmrun.load("m"), FakeRunner)


def test_bad_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("backend = \n")
    monkeypatch.setenv("LLMRUN_CONFIG", str(config))
    with pytest.raises(ConfigurationError, match=r"bad\.toml is not valid TOML"):
        llmrun.load("m")
    monkeypatch.setenv("LLMRUN_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigurationError, match="not a file"):
        llmrun.load("m")


def test_bad_env_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMRUN_SEED", "seven")
    with pytest.raises(ConfigurationError, match="LLMRUN_SEED='seven' is not a valid int"):
        llmrun.load("m", backend="fake")


def test_unknown_backend_lists_known_ones() -> None:
    with pytest.raises(BackendNotFoundError, match=r"unknown backend 'nope'.*fake, lamini, local"):
        llmrun.load("m", backend="nope")


def test_unknown_option_lists_accepted_ones() -> None:
    with pytest.raises(ConfigurationError, match=r"does not take option\(s\) device.*delay, responses, seed"):
        llmrun.load("m", backend="fake", device="cuda")


class EchoRunner(ModelRunner):
    backend_name = "echo"

    def complete(self, request: CompletionRequest) -> list[str]:
        return list(request.prompts)


def test_register_backend_at_run_time() -> None:
    register_backend("echo", EchoRunner)
    assert "echo" in available_backends()
    assert llmrun.load("m", backend="echo")("hi") == "hi"


def test_entry_point_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A third-party package adds a backend through the entry-point group, touching nothing of llmrun."""
    dist = tmp_path / "thirdparty-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: thirdparty\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[llmrun.backends]\nshout = thirdparty_backend:ShoutRunner\n")
    (tmp_path / "thirdparty_backend.py").write_text(
        "from llmrun.runner import ModelRunner\n"
        "class ShoutRunner(ModelRunner):\n"
        "    backend_name = 'shout'\n"
        "    def complete(self, request):\n"
        "        return [p.upper() + '!' for p in request.prompts]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "shout" in available_backends()
    assert llmrun.load("m", backend="shout")("hey") == "HEY!"


def test_registry_rejects_non_runner() -> None:
    register_backend("notarunner", "builtins:dict")
    with pytest.raises(BackendNotFoundError, match="not a ModelRunner subclass"):
        get_backend("notarunner")


def test_basic_model_runner_and_llm_engine_use_configured_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMRUN_BACKEND", "fake")
    from llmrun import BasicModelRunner, Context, LLMEngine, Type

    class Test(Type):
        test_string: str = Context("just a test")

    model = BasicModelRunner("EleutherAI/pythia-70m")
    assert isinstance(model("Question: What is the highest mountain in the world? Answer:"), str)
    llm = LLMEngine(id="example_llm", config={"production.key": "<YOUR TOKEN>"})
    result = llm(Test(test_string="testing"), output_type=Test)
    assert isinstance(result, Test)
    assert "<YOUR TOKEN>" not in repr(llm)
