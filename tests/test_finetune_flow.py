"""The whole fine-tuning flow through the public API on the local backend:
load data, train, evaluate, generate with the tuned model, reload it from disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import llmrun
from llmrun import BasicModelRunner, Context, EvalResult, LLMEngine, TrainResult, Type
from llmrun.errors import ConfigurationError, DataError

COLOURS = {
    "red": ["apple", "cherry", "blood", "tomato"],
    "blue": ["sky", "ocean", "sapphire", "blueberry"],
    "green": ["grass", "leaf", "lime", "frog"],
    "white": ["snow", "milk", "cloud", "salt"],
}
QA = [{"question": f"What color is the {t}?", "answer": c} for c, things in COLOURS.items() for t in things]


FAST = {"epochs": 30, "learning_rate": 3e-3, "batch_size": 4, "eval_fraction": 0.25, "warmup_ratio": 0.1}


@pytest.fixture
def qa_file(tmp_path: Path) -> Path:
    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in QA))
    return path


def test_local_flow_train_evaluate_generate_reload(
    tiny_gpt_neox_dir: Path, qa_file: Path, tmp_path: Path
) -> None:
    model = BasicModelRunner(
        str(tiny_gpt_neox_dir), backend="local", device="cpu", runs_dir=str(tmp_path / "runs")
    )
    model.load_data_from_jsonlines(qa_file, input_key="question", output_key="answer")
    before = model("What color is the sky?", max_new_tokens=4)

    result = model.train(**FAST)
    assert isinstance(result, TrainResult)
    assert result.status == "completed"
    assert result.run_dir is not None
    assert result.run_dir.parent == tmp_path / "runs"
    assert model.model_name == result.model_name

    report = model.evaluate()
    assert isinstance(report, EvalResult)
    assert report.loss is not None
    assert report.perplexity is not None
    assert report.num_examples == 4
    assert report.samples

    # The runner now answers with the tuned model.
    tuned = [model(row["question"], max_new_tokens=4, stop=["\n"]).strip() for row in QA]
    assert tuned != [before] * len(QA)
    assert sum(t == row["answer"] for t, row in zip(tuned, QA, strict=True)) >= 12  # the 12 training pairs

    # And the run directory loads later, with the same answers.
    reloaded = llmrun.load(str(result.run_dir), device="cpu")
    assert [reloaded(row["question"], max_new_tokens=4, stop=["\n"]).strip() for row in QA] == tuned


class Fact(Type):
    thing: str = Context("a thing")


class Colour(Type):
    colour: str = Context("its colour")


def test_typed_pairs_train_the_schema_format(tiny_gpt_neox_dir: Path, tmp_path: Path) -> None:
    model = LLMEngine(
        model_name=str(tiny_gpt_neox_dir), device="cpu", runs_dir=str(tmp_path / "runs"), progress=False
    )
    pairs = [(Fact(thing=t), Colour(colour=c)) for c, things in COLOURS.items() for t in things]
    model.load_data(pairs)
    model.train(**FAST)
    got = model(Fact(thing="apple"), output_type=Colour, max_new_tokens=24)
    assert got == Colour(colour="red")


def test_bad_training_options_and_data_fail_before_training(tiny_gpt_neox_dir: Path, tmp_path: Path) -> None:
    model = BasicModelRunner(str(tiny_gpt_neox_dir), device="cpu", runs_dir=str(tmp_path / "runs"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "answer": "a"}\n{"question": "q2"}\n')
    with pytest.raises(DataError, match=r"bad\.jsonl, line 2"):
        model.load_data_from_jsonlines(bad, input_key="question", output_key="answer")
    model.load_data(QA, input_key="question", output_key="answer")
    with pytest.raises(ConfigurationError, match="epochs"):
        model.train(epochs=0)
    with pytest.raises(ConfigurationError, match="unknown"):
        model.train(epoch=3)
    assert not (tmp_path / "runs").exists()
