"""The README's path: after the demo, `llmrun run ...` in a plain shell finds the demo's offline model."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmrun.errors import ConfigurationError
from llmrun.testing.demo import MARKER, main, prepare, write_demo_config


def test_missing_tokenizer_names_the_file_and_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "shared" / "assets" / "tokenizers" / "pythia" / "tokenizer.json"
    with pytest.raises(ConfigurationError, match=r"tokenizer file .*tokenizer\.json: that file is missing"):
        prepare(tmp_path, missing)
    assert main(["prepare", "--root", str(tmp_path), "--tokenizer", str(missing), "--force-offline"]) == 1
    err = capsys.readouterr().err
    assert str(missing) in err
    assert "huggingface.co" in err
    assert not (tmp_path / "llmrun.toml").exists()


def test_a_foreign_llmrun_toml_is_left_alone(tmp_path: Path) -> None:
    (tmp_path / "llmrun.toml").write_text('backend = "lamini"\n')
    with pytest.raises(ConfigurationError, match="was not written by the demo"):
        write_demo_config(tmp_path, tmp_path / "cache")
    assert (tmp_path / "llmrun.toml").read_text() == 'backend = "lamini"\n'


def test_plain_shell_run_after_the_demo(
    tiny_hf_cache: object,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No HF_HUB_* variables, no network: the demo's llmrun.toml alone leads the CLI to the cached model."""
    pytest.importorskip("torch", reason="the local backend")
    from llmrun.cli import main as cli
    from llmrun.testing.fixtures import TinyHFCache, block_network

    assert isinstance(tiny_hf_cache, TinyHFCache)
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE", "HF_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-home"))  # the default cache has nothing
    monkeypatch.chdir(tmp_path)
    written = write_demo_config(tmp_path, tiny_hf_cache.cache_dir)
    assert written.read_text().startswith(MARKER)
    write_demo_config(tmp_path, tiny_hf_cache.cache_dir)  # a second demo run rewrites its own file
    repo_id = tiny_hf_cache.repo_ids["gpt_neox"]
    with block_network():
        assert (
            cli(["run", repo_id, "Question: What is the highest mountain? Answer:", "--max-new-tokens", "3"])
            == 0
        )
    assert capsys.readouterr().out.strip() != ""
    assert "Retrying" not in caplog.text  # not a single attempt to reach the hub (each costs seconds)
    assert "huggingface.co" not in caplog.text
