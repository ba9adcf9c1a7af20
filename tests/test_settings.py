"""Every option from every source goes through one validated settings model; no string becomes True."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import llmrun
from llmrun.config import accepted_options, options_model, resolve_options
from llmrun.errors import ConfigurationError
from llmrun.runner import CompletionRequest, ModelRunner
from llmrun.testing import FakeRunner


class SafeRunner(ModelRunner):
    """A backend with the local backend's kinds of options, cheap to build."""

    backend_name = "safe"

    def __init__(
        self,
        model_name: str,
        *,
        generation: Any = None,
        template: str | None = None,
        trust_remote_code: bool = False,
        allow_pickle: bool = False,
        truncate_prompt: bool = False,
        progress: bool = True,
        threads: int | None = None,
        timeout: float = 60.0,
        runs_dir: str = "llmrun-runs",
    ) -> None:
        super().__init__(model_name, generation=generation, template=template)
        self.options = {
            "trust_remote_code": trust_remote_code,
            "allow_pickle": allow_pickle,
            "truncate_prompt": truncate_prompt,
            "progress": progress,
            "threads": threads,
            "timeout": timeout,
            "runs_dir": runs_dir,
        }

    def complete(self, request: CompletionRequest) -> list[str]:
        return list(request.prompts)


@pytest.fixture(autouse=True)
def _safe_backend() -> None:
    llmrun.register_backend("safe", SafeRunner)


def _config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str | bytes) -> Path:
    path = tmp_path / "llmrun.toml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    monkeypatch.setenv("LLMRUN_CONFIG", str(path))
    return path


@pytest.mark.parametrize("name", ["trust_remote_code", "allow_pickle", "truncate_prompt", "progress"])
def test_string_boolean_in_file_is_an_error(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _config(tmp_path, monkeypatch, f'backend = "safe"\n[safe]\n{name} = "no"\n')
    with pytest.raises(ConfigurationError) as info:
        llmrun.load("m")
    message = str(info.value)
    assert name in message
    assert str(path) in message
    assert "[safe]" in message
    assert f"{name} = false" in message  # the fix: an unquoted TOML boolean


@pytest.mark.parametrize("name", ["trust_remote_code", "allow_pickle", "truncate_prompt", "progress"])
def test_string_boolean_argument_is_an_error(name: str) -> None:
    with pytest.raises(ConfigurationError, match=rf"{name}='no' \(argument\).*True or False"):
        llmrun.load("m", backend="safe", **{name: "no"})


def test_top_level_string_boolean_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _config(tmp_path, monkeypatch, 'backend = "safe"\ntrust_remote_code = "yes"\n')
    with pytest.raises(ConfigurationError, match=r"trust_remote_code='yes'.*top level"):
        llmrun.load("m")


def test_env_booleans_keep_their_explicit_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMRUN_ALLOW_PICKLE", "0")
    monkeypatch.setenv("LLMRUN_PROGRESS", "false")
    monkeypatch.setenv("LLMRUN_TRUNCATE_PROMPT", "1")
    runner = llmrun.load("m", backend="safe")
    assert isinstance(runner, SafeRunner)
    assert runner.options["allow_pickle"] is False
    assert runner.options["progress"] is False
    assert runner.options["truncate_prompt"] is True
    monkeypatch.setenv("LLMRUN_ALLOW_PICKLE", "nope")
    with pytest.raises(ConfigurationError, match=r"LLMRUN_ALLOW_PICKLE='nope' is not a boolean; use 1/0"):
        llmrun.load("m", backend="safe")


def test_file_booleans_and_numbers_pass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _config(
        tmp_path, monkeypatch, 'backend = "safe"\n[safe]\nallow_pickle = true\nthreads = 2\ntimeout = 5\n'
    )
    runner = llmrun.load("m")
    assert isinstance(runner, SafeRunner)
    assert runner.options["allow_pickle"] is True
    assert runner.options["threads"] == 2
    assert runner.options["timeout"] == 5.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('backend = "safe"\n[safe]\nthreads = "4"\n', r"threads='4'.*integer"),
        ('backend = "safe"\n[safe]\nthreads = true\n', r"threads=True.*integer"),
        ('backend = "safe"\n[safe]\ntimeout = "fast"\n', r"timeout='fast'.*number"),
        ('backend = "safe"\n[safe]\ntimeout = nan\n', r"timeout=nan.*finite"),
        ('backend = "safe"\n[safe]\nruns_dir = 3\n', r"runs_dir=3.*string"),
    ],
)
def test_file_values_are_type_checked(
    text: str, expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _config(tmp_path, monkeypatch, text)
    with pytest.raises(ConfigurationError, match=expected):
        llmrun.load("m")


def test_path_is_a_fine_string_argument(tmp_path: Path) -> None:
    runner = llmrun.load("m", backend="safe", runs_dir=tmp_path)
    assert isinstance(runner, SafeRunner)
    assert Path(runner.options["runs_dir"]) == tmp_path


def test_unknown_key_in_file_names_the_close_match(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _config(tmp_path, monkeypatch, 'backend = "safe"\n[safe]\nalow_pickle = false\n')
    with pytest.raises(ConfigurationError, match=r"unknown key 'alow_pickle'.*did you mean 'allow_pickle'"):
        llmrun.load("m")
    path.write_text('backend = "safe"\ntrust_remote_cod = false\n')
    with pytest.raises(ConfigurationError, match=r"unknown key 'trust_remote_cod'.*'trust_remote_code'"):
        llmrun.load("m")


def test_devcie_typo_in_local_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The probe's exact case, on a backend with a ``device`` option."""
    _config(tmp_path, monkeypatch, 'backend = "fake"\n[fake]\nseeed = 3\n')
    with pytest.raises(ConfigurationError, match=r"unknown key 'seeed'.*did you mean 'seed'"):
        llmrun.load("m")


def test_unknown_table_names_the_backends(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _config(tmp_path, monkeypatch, 'backend = "fake"\n[lamnii]\ntimeout = 3\n')
    with pytest.raises(ConfigurationError, match=r"unknown table \[lamnii\].*did you mean \[lamini\]"):
        llmrun.load("m")


def test_non_utf8_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _config(tmp_path, monkeypatch, b'backend = "fake"\nmodel = "caf\xe9"\n')
    with pytest.raises(ConfigurationError, match=r"llmrun\.toml is not UTF-8 text.*save it as UTF-8"):
        llmrun.load()


@pytest.mark.parametrize("model", ["", "   "])
def test_empty_model_name_is_not_the_default(model: str) -> None:
    with pytest.raises(ConfigurationError, match="model name is empty"):
        llmrun.load(model, backend="fake")


def test_empty_model_in_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _config(tmp_path, monkeypatch, 'backend = "fake"\nmodel = ""\n')
    with pytest.raises(ConfigurationError, match="model name is empty"):
        llmrun.load()


def test_one_settings_model_per_runner() -> None:
    model = options_model(SafeRunner)
    assert set(model.model_fields) == set(accepted_options(SafeRunner))
    assert options_model(SafeRunner) is model  # built once


def test_resolve_options_is_the_one_place(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMRUN_THREADS", "3")
    merged = resolve_options(SafeRunner, "safe", {"timeout": 2}, {"safe": {"progress": False}})
    assert merged == {"timeout": 2.0, "threads": 3, "progress": False}
    monkeypatch.setenv("LLMRUN_THREADS", "")
    assert "threads" not in resolve_options(SafeRunner, "safe", {}, {})


def test_fake_runner_values_checked_from_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _config(tmp_path, monkeypatch, 'backend = "fake"\n[fake]\nseed = "1"\n')
    with pytest.raises(ConfigurationError, match=r"seed='1'.*\[fake\].*integer"):
        llmrun.load("m")
    monkeypatch.setenv("LLMRUN_CONFIG", "")
    assert isinstance(llmrun.load("m", backend="fake", seed=4), FakeRunner)


def test_resolved_settings_is_gone() -> None:
    import llmrun.config

    assert not hasattr(llmrun.config, "ResolvedSettings")
