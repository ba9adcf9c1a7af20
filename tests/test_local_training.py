"""Local fine-tuning on tiny random-weight models: it learns, saves, reloads, checkpoints atomically."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llmrun.errors import ConfigurationError, TrainingError
from llmrun.training import (
    RUN_METADATA_FILE,
    EvalResult,
    TrainingExample,
    TrainOptions,
    completions_match,
    resolve_model_dir,
    split_examples,
)

torch = pytest.importorskip("torch", reason="local training needs torch (the local extra)")
transformers = pytest.importorskip("transformers", reason="local training needs transformers")

from llmrun.backends.local import checkpointing, lora  # noqa: E402
from llmrun.backends.local.batching import IGNORE_INDEX, collate, encode_examples  # noqa: E402
from llmrun.backends.local.engine import LocalEngine  # noqa: E402
from llmrun.backends.local.evaluation import evaluate_local, greedy_generate  # noqa: E402
from llmrun.backends.local.training import train_local  # noqa: E402
from llmrun.data import load_examples  # noqa: E402

# Four colours, four things each: every held-out answer also occurs in training, so held-out loss can drop.
COLOURS = {
    "red": ["apple", "cherry", "blood", "tomato"],
    "blue": ["sky", "ocean", "sapphire", "blueberry"],
    "green": ["grass", "leaf", "lime", "frog"],
    "white": ["snow", "milk", "cloud", "salt"],
}
QA = [
    {"question": f"What color is the {thing}?", "answer": c}
    for c, things in COLOURS.items()
    for thing in things
]

# Tuned so the tiny model memorises the 12 training pairs in about a second of CPU time.
FAST = {
    "epochs": 30,
    "learning_rate": 3e-3,
    "batch_size": 4,
    "eval_fraction": 0.25,
    "warmup_ratio": 0.1,
    "save_every_steps": 1000,
}


@pytest.fixture(autouse=True)
def _one_thread() -> Any:
    """Tiny models gain nothing from threads, and 1 thread keeps timings steady on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def load(folder: Path) -> tuple[Any, Any]:
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    return model, tokenizer


def examples() -> list[TrainingExample]:
    return load_examples(QA, input_key="question", output_key="answer")


def answers(model: Any, tokenizer: Any, pairs: list[TrainingExample]) -> list[str]:
    return [g.strip() for g in greedy_generate(LocalEngine(model, tokenizer), [e.prompt for e in pairs], 8)]


def test_full_fine_tuning_learns_and_saves_a_loadable_model(tiny_gpt_neox_dir: Path, tmp_path: Path) -> None:
    model, tokenizer = load(tiny_gpt_neox_dir)
    data = examples()
    train, held = split_examples(data, FAST["eval_fraction"], seed=42)  # type: ignore[arg-type]
    run_dir = tmp_path / "run"

    result = train_local(LocalEngine(model, tokenizer), data, TrainOptions(**FAST), run_dir, progress=False)  # type: ignore[arg-type]

    # It learns: the held-out loss drops clearly and the training answers come back under greedy decoding.
    m = result.metrics
    assert m["eval_loss"] < 0.5 * m["eval_loss_initial"], m
    assert m["train_loss_last"] < 0.5 * m["train_loss_first"], m
    assert answers(model, tokenizer, train) == [e.completion for e in train]
    assert len(held) == 4
    assert result.eval is not None
    assert result.eval.num_examples == 4

    # The run directory: loadable safetensors folder, metadata, loss curve, a checkpoint.
    assert result.status == "completed"
    assert result.run_dir == run_dir
    model_dir = Path(result.model_name)
    assert model_dir == run_dir / "model" == resolve_model_dir(run_dir)
    assert (model_dir / "model.safetensors").is_file()
    assert not list(model_dir.glob("*.bin"))
    assert not list(model_dir.glob("*.pt"))
    for name in ("config.json", "generation_config.json", "tokenizer.json", RUN_METADATA_FILE):
        assert (model_dir / name).is_file(), name
    meta = json.loads((run_dir / RUN_METADATA_FILE).read_text())
    assert meta["method"] == "full"
    assert meta["base_model"] == str(tiny_gpt_neox_dir.resolve())
    assert meta["options"]["epochs"] == 30
    assert meta["metrics"]["eval_loss"] == pytest.approx(m["eval_loss"])
    assert (run_dir / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert checkpointing.latest_checkpoint(run_dir) is not None
    assert [s for s, _ in result.loss_history] == list(range(1, 91))

    reloaded, reloaded_tok = load(model_dir)
    assert answers(reloaded, reloaded_tok, train) == [e.completion for e in train]

    evaluation = evaluate_local(LocalEngine(reloaded, reloaded_tok), data, TrainOptions(**FAST))  # type: ignore[arg-type]
    assert isinstance(evaluation, EvalResult)
    assert evaluation.num_examples == 4
    assert evaluation.loss == pytest.approx(m["eval_loss"], rel=1e-4)
    assert evaluation.perplexity == pytest.approx(2.718281828 ** m["eval_loss"], rel=1e-4)
    assert evaluation.exact_match is not None
    assert 0.0 <= evaluation.exact_match <= 1.0
    assert [s.expected for s in evaluation.samples] == [e.completion for e in held[:3]]


def test_lora_trains_an_adapter_that_reloads(tiny_llama_dir: Path, tmp_path: Path) -> None:
    model, tokenizer = load(tiny_llama_dir)
    base_weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    data = examples()
    options = TrainOptions(**{**FAST, "learning_rate": 1e-2, "epochs": 15}, lora=True)  # type: ignore[arg-type]

    result = train_local(LocalEngine(model, tokenizer), data, options, tmp_path / "run", progress=False)

    # A random-weight base cannot be steered far through q/v adapters alone, but the loss must move.
    m = result.metrics
    assert m["eval_loss"] < m["eval_loss_initial"] - 0.1, m
    assert m["train_loss_min"] < m["train_loss_first"] - 0.3, m
    model_dir = Path(result.model_name)
    assert lora.is_adapter_dir(model_dir)
    assert (model_dir / "adapter_model.safetensors").is_file()
    assert not (model_dir / "model.safetensors").exists()
    config = json.loads((model_dir / "adapter_config.json").read_text())
    assert sorted(config["target_modules"]) == ["q_proj", "v_proj"]
    assert config["r"] == 8
    assert lora.adapter_base_model(model_dir) == str(tiny_llama_dir.resolve())
    assert json.loads((model_dir / RUN_METADATA_FILE).read_text())["method"] == "lora"

    probe = tokenizer(["What color is the sky?"], return_tensors="pt")
    with torch.no_grad():
        trained_logits = model(**probe).logits  # the trained object answers with the merged adapter
        base, _ = load(Path(lora.adapter_base_model(model_dir)))
        for name, p in base.named_parameters():  # the base checkpoint on disk is untouched
            torch.testing.assert_close(p, base_weights[name])
        base_logits = base(**probe).logits
        tuned = lora.load_adapter(base, model_dir)
        reloaded_logits = tuned(**probe).logits
    assert not torch.allclose(trained_logits, base_logits, atol=1e-3)
    torch.testing.assert_close(reloaded_logits, trained_logits, atol=1e-4, rtol=1e-4)

    # The merged object has no saved base of its own: a second adapter on it would not reload.
    with pytest.raises(TrainingError, match="merged LoRA adapter"):
        train_local(LocalEngine(model, tokenizer), data, options, tmp_path / "again", progress=False)


def _fail_on_nth_torch_save(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    """Make the n-th checkpoint save crash after its weights file is already written."""
    real_save = torch.save
    calls = {"count": 0}

    def flaky_save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        calls["count"] += 1
        if calls["count"] == n:
            assert Path(f).parent.name.startswith(".tmp-step-")  # mid-save, inside the temp folder
            assert (Path(f).parent / "trainable.safetensors").is_file()
            raise OSError(28, "No space left on device")
        real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(checkpointing.torch, "save", flaky_save)


def test_crash_mid_save_keeps_the_last_good_checkpoint_and_resume_continues(
    tiny_gpt_neox_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = examples()
    options = TrainOptions(**{**FAST, "max_steps": 6, "save_every_steps": 2})  # type: ignore[arg-type]
    run_dir = tmp_path / "run"

    # An uninterrupted reference run.
    model, tokenizer = load(tiny_gpt_neox_dir)
    reference = train_local(
        LocalEngine(model, tokenizer), data, options, tmp_path / "reference", progress=False
    )

    # The same run crashes while writing its second checkpoint (step 4).
    model, tokenizer = load(tiny_gpt_neox_dir)
    _fail_on_nth_torch_save(monkeypatch, 2)
    with pytest.raises(TrainingError, match="No space left"):
        train_local(LocalEngine(model, tokenizer), data, options, run_dir, progress=False)
    monkeypatch.undo()

    good = checkpointing.latest_checkpoint(run_dir)
    assert good is not None
    assert good.step == 2
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] == ["step-00000002"]  # temp folder gone
    assert not (run_dir / "model").exists()  # a failed run writes no final model
    state = good.state()
    assert state["step"] == 2
    assert len(state["losses"]) == 2

    # A hard crash (no cleanup) would leave a partial temp folder: it is ignored, then removed.
    partial = run_dir / "checkpoints" / ".tmp-step-00000004-x1y2"
    partial.mkdir()
    (partial / "trainable.safetensors").write_bytes(b"truncated")
    assert checkpointing.latest_checkpoint(run_dir) == good

    # Without resume=True the run directory is not reused.
    model, tokenizer = load(tiny_gpt_neox_dir)
    with pytest.raises(TrainingError, match="resume=True"):
        train_local(LocalEngine(model, tokenizer), data, options, run_dir, progress=False)
    # Changed options cannot resume either.
    with pytest.raises(TrainingError, match="learning_rate"):
        train_local(
            LocalEngine(model, tokenizer),
            data,
            options.merged(resume=True, learning_rate=1e-3),
            run_dir,
            progress=False,
        )

    model, tokenizer = load(tiny_gpt_neox_dir)
    resumed = train_local(
        LocalEngine(model, tokenizer), data, options.merged(resume=True), run_dir, progress=False
    )
    assert not partial.exists()
    assert [s for s, _ in resumed.loss_history] == [1, 2, 3, 4, 5, 6]
    # Resuming reproduces the uninterrupted run.
    for (s1, l1), (s2, l2) in zip(resumed.loss_history, reference.loss_history, strict=True):
        assert s1 == s2
        assert l1 == pytest.approx(l2, rel=1e-4, abs=1e-5)
    assert resumed.metrics["eval_loss"] == pytest.approx(reference.metrics["eval_loss"], rel=1e-4)
    latest = checkpointing.latest_checkpoint(run_dir)
    assert latest is not None
    assert latest.step == 6
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] == ["step-00000006"]  # keep_checkpoints=1


def test_atomic_directory_leaves_the_old_folder_when_the_write_fails(tmp_path: Path) -> None:
    final = tmp_path / "model"
    with checkpointing.atomic_directory(final) as tmp:
        (tmp / "weights").write_text("good")

    def half_write() -> None:
        with checkpointing.atomic_directory(final) as tmp:
            (tmp / "weights").write_text("half")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        half_write()
    assert (final / "weights").read_text() == "good"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    with checkpointing.atomic_directory(final) as tmp:
        (tmp / "weights").write_text("new")
    assert (final / "weights").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_loss_is_on_completion_tokens_only(tiny_gpt_neox_dir: Path) -> None:
    _, tokenizer = load(tiny_gpt_neox_dir)
    (example,) = load_examples([{"input": "What color is the sky?", "output": "blue"}])
    (encoded,) = encode_examples(tokenizer, [example], max_length=64)
    prompt_ids = tokenizer(example.prompt)["input_ids"]
    assert list(encoded.input_ids[: encoded.num_prompt]) == prompt_ids  # the prompt as generation sees it
    assert tokenizer.decode(encoded.input_ids[encoded.num_prompt : -1]) == " blue"
    assert encoded.input_ids[-1] == tokenizer.eos_token_id
    short = encode_examples(tokenizer, [TrainingExample("Hi", "there", " ")], 64)[0]
    batch = collate([encoded, short], pad=0)
    assert batch.input_ids.shape == (2, len(encoded.input_ids))
    labels = batch.labels.tolist()
    assert labels[0][: encoded.num_prompt] == [IGNORE_INDEX] * encoded.num_prompt
    assert labels[0][encoded.num_prompt :] == list(encoded.input_ids[encoded.num_prompt :])
    assert labels[1][len(short.input_ids) :] == [IGNORE_INDEX] * (
        len(encoded.input_ids) - len(short.input_ids)
    )
    assert batch.attention_mask.sum().item() == len(encoded.input_ids) + len(short.input_ids)


def test_examples_too_long_for_max_length(tiny_gpt_neox_dir: Path) -> None:
    _, tokenizer = load(tiny_gpt_neox_dir)
    (cut,) = encode_examples(tokenizer, [TrainingExample("Q?", "a long answer " * 20, " ")], max_length=12)
    assert len(cut.input_ids) == 12
    with pytest.raises(TrainingError, match="max_length"):
        encode_examples(tokenizer, [TrainingExample("a very long prompt " * 10, "x", " ")], max_length=8)


# ----------------------------------------------------------------- options (backend-neutral)
def test_train_options_defaults_and_overrides() -> None:
    o = TrainOptions()
    assert (o.method, o.epochs, o.batch_size, o.seed, o.eval_fraction, o.bf16) == (
        "auto",
        3,
        8,
        42,
        0.1,
        False,
    )
    assert o.resolved_method(70_000_000) == "full"
    assert o.resolved_method(7_000_000_000) == "lora"
    assert o.resolved_learning_rate("full") == 5e-5
    assert o.resolved_learning_rate("lora") == 2e-4
    assert TrainOptions(lora=True).method == "lora"
    assert TrainOptions(lora=False).method == "full"
    assert TrainOptions.from_kwargs(lora=True, epochs=1).method == "lora"
    assert TrainOptions(lora_target_modules=["q_proj"]).lora_target_modules == ("q_proj",)  # type: ignore[arg-type]
    assert o.merged(epochs=5, learning_rate=None).epochs == 5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"epochs": 0}, "epochs=0"),
        ({"epochs": 1.5}, "epochs=1.5"),
        ({"learning_rate": 0.0}, "learning_rate=0.0"),
        ({"learning_rate": float("nan")}, "learning_rate=nan"),
        ({"batch_size": True}, "batch_size=True"),
        ({"eval_fraction": 0.9}, "eval_fraction=0.9"),
        ({"method": "qlora"}, "method='qlora'"),
        ({"lora_target_modules": []}, "lora_target_modules"),
        ({"bf16": "yes"}, "bf16='yes'"),
        ({"lora": True, "method": "full"}, "contradicts"),
    ],
)
def test_bad_train_options(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message.replace("(", r"\(").replace(".", r"\.")):
        TrainOptions(**kwargs)


def test_unknown_option_names_the_known_ones() -> None:
    with pytest.raises(ConfigurationError, match=r"unknown training option.*epoch.*known options are: lora"):
        TrainOptions.from_kwargs(epoch=3)


def test_split_is_deterministic_and_completions_match() -> None:
    data = [TrainingExample(f"q{i}", f"a{i}") for i in range(20)]
    train, held = split_examples(data, 0.1, seed=7)
    assert (len(train), len(held)) == (18, 2)
    assert split_examples(data, 0.1, seed=7) == (train, held)
    assert split_examples(data, 0.1, seed=8) != (train, held)
    assert split_examples(data[:1], 0.5, seed=0) == (data[:1], [])
    assert split_examples(data[:2], 0.01, seed=0)[1] != []
    assert completions_match("Paris", "  Paris\n")
    assert completions_match('{"a": 1, "b": [2]}', '{"b":[2],"a":1}')
    assert not completions_match("Paris", "paris")
