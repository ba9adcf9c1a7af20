"""Local training through the runner: transactional (a failed run changes nothing), run names, resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import llmrun
from llmrun.backends.local import LocalRunner
from llmrun.data import load_examples
from llmrun.errors import TrainingError
from llmrun.training import TrainingExample, TrainOptions

torch = pytest.importorskip("torch", reason="local training needs torch (the local extra)")

from llmrun.backends.local import checkpointing  # noqa: E402

QA = [{"input": f"What color is thing {i}?", "output": ["red", "blue", "green"][i % 3]} for i in range(12)]
FAST: dict[str, Any] = {"max_steps": 3, "batch_size": 4, "eval_fraction": 0.25, "learning_rate": 3e-3}
PROMPT = "What color is thing 1?"


def examples() -> list[TrainingExample]:
    return load_examples(QA)


def runner_for(folder: Path, runs: Path) -> LocalRunner:
    loaded = llmrun.load(str(folder), backend="local", device="cpu", runs_dir=str(runs), progress=False)
    assert isinstance(loaded, LocalRunner)
    return loaded


def weights(runner: LocalRunner) -> dict[str, Any]:
    return {n: p.detach().clone() for n, p in runner.model.named_parameters()}


def assert_unchanged(runner: LocalRunner, name: str, before: dict[str, Any], answer: str) -> None:
    assert runner.model_name == name
    params = dict(runner.model.named_parameters())
    assert sorted(params) == sorted(before)  # no adapter layers left behind
    for n, p in params.items():
        torch.testing.assert_close(p, before[n], rtol=0, atol=0)
        assert not p.requires_grad, n
    assert not runner.model.training
    assert runner(PROMPT, max_new_tokens=6) == answer


@pytest.mark.parametrize("lora", [False, True])
def test_a_run_that_cannot_write_restores_the_runner(
    tiny_llama_dir: Path, tmp_path: Path, lora: bool
) -> None:
    runs = tmp_path / "runs-is-a-file"
    runs.write_text("not a folder")  # every write under it fails, even as root
    runner = runner_for(tiny_llama_dir, runs)
    before, answer = weights(runner), runner(PROMPT, max_new_tokens=6)
    with pytest.raises(TrainingError, match="unchanged"):
        runner.train_examples(examples(), TrainOptions(**FAST, lora=lora))
    assert_unchanged(runner, str(tiny_llama_dir), before, answer)


@pytest.mark.parametrize("lora", [False, True])
def test_a_run_failing_after_its_weights_merged_restores_the_runner(
    tiny_llama_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lora: bool
) -> None:
    runner = runner_for(tiny_llama_dir, tmp_path / "runs")
    before, answer = weights(runner), runner(PROMPT, max_new_tokens=6)

    def disk_full(path: Path, data: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpointing, "write_json_atomic", disk_full)  # the last writes of a run
    with pytest.raises(TrainingError, match="No space left"):
        runner.train_examples(examples(), TrainOptions(**FAST, lora=lora))
    assert_unchanged(runner, str(tiny_llama_dir), before, answer)


def test_every_run_is_named_after_the_base_model_and_resume_finds_it(
    tiny_gpt_neox_dir: Path, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    runner = runner_for(tiny_gpt_neox_dir, runs)
    first = runner.train_examples(examples(), TrainOptions(**FAST))
    second = runner.train_examples(examples(), TrainOptions(**FAST))
    assert first.run_dir is not None
    assert second.run_dir is not None
    assert first.run_dir != second.run_dir
    assert second.run_dir.name.startswith("gpt_neox-")  # not "model-...", the tuned folder's name
    # resume on the same runner continues the newest run of this base model
    resumed = runner.train_examples(examples(), TrainOptions(**FAST, resume=True))
    assert resumed.run_dir == second.run_dir
    assert resumed.loss_history == second.loss_history  # the finished run, taken up where it ended


def test_a_fresh_runner_resumes_a_lora_run(tiny_llama_dir: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    options = TrainOptions(**FAST, lora=True)
    done = runner_for(tiny_llama_dir, runs).train_examples(examples(), options)
    fresh = runner_for(tiny_llama_dir, runs)
    resumed = fresh.train_examples(examples(), options.merged(resume=True))
    assert resumed.run_dir == done.run_dir
    assert resumed.loss_history == done.loss_history


def test_the_evaluation_inside_train_sees_the_tuned_weights(tiny_gpt_neox_dir: Path, tmp_path: Path) -> None:
    runner = runner_for(tiny_gpt_neox_dir, tmp_path / "runs")
    options = TrainOptions(epochs=30, learning_rate=3e-3, batch_size=4, eval_fraction=0.25, warmup_ratio=0.1)
    result = runner.train_examples(examples(), options)
    assert result.eval is not None
    again = runner.evaluate_examples(examples())  # the same held-out split, after training
    assert [s.got for s in result.eval.samples] == [s.got for s in again.samples]
    assert result.eval.exact_match == again.exact_match
    assert result.eval.loss == pytest.approx(again.loss)
