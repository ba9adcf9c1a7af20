"""The llmrun command, end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmrun.cli import main


def run_cli(
    *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llmrun.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


def test_version_and_help() -> None:
    assert run_cli("--version").stdout.startswith("llmrun ")
    helped = run_cli("run", "--help")
    assert helped.returncode == 0
    for flag in ("--backend", "--device", "--dtype", "--max-new-tokens", "--json", "--file", "examples:"):
        assert flag in helped.stdout


def test_run_local_model_end_to_end(tiny_gpt_neox_dir: Path) -> None:
    done = run_cli(
        "run", str(tiny_gpt_neox_dir), "Hello there", "--device", "cpu", "--max-new-tokens", "5", "--json"
    )
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout.strip().splitlines()[-1])
    assert record["prompt"] == "Hello there"
    assert isinstance(record["output"], str)


def test_prompts_from_stdin_and_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    piped = run_cli("run", "m", "--backend", "fake", "--json", stdin="from stdin\n")
    assert piped.returncode == 0, piped.stderr
    assert json.loads(piped.stdout)["prompt"] == "from stdin"
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("one\n\ntwo\n")
    assert main(["run", "m", "--backend", "fake", "--file", str(prompts), "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [json.loads(line)["prompt"] for line in lines] == ["one", "two"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "m", "x", "--backend", "nope"], "unknown backend 'nope'"),
        (["run", "m", "x", "--backend", "fake", "--max-new-tokens", "0"], "--max-new-tokens 0 is invalid"),
        (["run", "m", "x", "--backend", "fake", "--top-p", "3"], "--top-p 3.0 is invalid"),
        (["run", "m", "x", "--backend", "fake", "--temperature", "nan"], "--temperature nan is invalid"),
        (["run", "m", "x", "--backend", "fake", "--seed", str(2**70)], "--seed 1180591620717411303424 is"),
        (["run", "m", "x", "--backend", "fake", "--device", "cpu"], "does not take option(s) --device"),
        (["run", "m", "--backend", "fake", "--file", "missing.txt"], "cannot read prompts from missing.txt"),
    ],
)
def test_errors_are_reported_without_traceback(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(args) == 1
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_backends_lists_builtins(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backends"]) == 0
    assert {"fake", "lamini", "local"} <= set(capsys.readouterr().out.split())


def test_train_and_eval_local_end_to_end(
    tiny_gpt_neox_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "qa.csv"
    data.write_text("question,answer\n" + "".join(f"What is {i} plus one?,{i + 1}\n" for i in range(8)))
    runs = tmp_path / "runs"
    common = ["--input-key", "question", "--output-key", "answer", "--device", "cpu"]
    assert (
        main(
            [
                "train",
                str(tiny_gpt_neox_dir),
                str(data),
                *common,
                "--max-steps",
                "2",
                "--runs-dir",
                str(runs),
                "--json",
            ]
        )
        == 0
    )
    trained = json.loads(capsys.readouterr().out)
    assert trained["status"] == "completed"
    run_dir = Path(trained["run_dir"])
    assert run_dir.parent == runs
    assert main(["eval", str(run_dir), str(data), *common, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {"loss", "perplexity", "exact_match", "samples"} <= set(report)


def test_train_rejects_unknown_data_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "qa.txt"
    data.write_text("q a\n")
    assert main(["train", "m", str(data), "--backend", "fake"]) == 1
    assert "use a .jsonl" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--max-new-tokens", "0"], "--max-new-tokens 0 is invalid: it must be a positive integer"),
        (["run", "--temperature", "-1"], "--temperature -1.0 is invalid"),
        (["run", "--stop", ""], "--stop  is invalid: stop sequences must be non-empty"),
        (["run", "--threads", "0"], "--threads 0 is invalid"),
        (["train", "--epochs", "0"], "--epochs 0 is invalid: it must be an integer >= 1"),
        (["train", "--learning-rate", "5"], "--learning-rate 5.0 is invalid"),
    ],
)
def test_options_are_checked_before_the_model_loads(
    args: list[str], message: str, tiny_gpt_neox_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A model that cannot load (offline, not cached) proves the check ran first; flags, not keywords."""
    command, *flags = args
    data = tmp_path / "qa.jsonl"
    data.write_text('{"input": "a", "output": "b"}\n')
    where = ["x"] if command == "run" else [str(data)]
    missing = str(tmp_path / "no-such-model")
    assert main([command, missing, *where, *flags]) == 1
    err = capsys.readouterr().err
    assert message in err
    assert "_" not in err.split(" is invalid")[0]  # the flag's name, not the keyword
    assert "no-such-model" not in err


def test_train_checks_the_data_file_before_loading(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", str(tmp_path / "no-such-model"), str(tmp_path / "missing.jsonl")]) == 1
    assert "data file" in capsys.readouterr().err


def test_threads_flag_reaches_the_local_backend(
    tiny_gpt_neox_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    torch = pytest.importorskip("torch", reason="the local backend")
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert main(["run", str(tiny_gpt_neox_dir), "hi", "--max-new-tokens", "2", "--threads", "1"]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
