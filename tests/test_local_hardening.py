"""The local backend under probing: unsafe options, odd names and devices, damaged checkpoints,
full disks, read-only folders, permissions, threads and noise."""

from __future__ import annotations

import os
import shutil
import stat
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import llmrun
from llmrun.errors import ConfigurationError, ModelLoadError, ModelNotFoundError, TrainingError
from llmrun.training import TrainingExample, TrainOptions

torch = pytest.importorskip("torch", reason="the local backend needs torch (the local extra)")
transformers = pytest.importorskip("transformers", reason="the local backend needs transformers")

from llmrun.backends.local import LocalRunner, checkpointing, threads  # noqa: E402
from llmrun.backends.local.engine import LocalEngine  # noqa: E402
from llmrun.backends.local.loading import LoadSettings, locate_model, resolve_device  # noqa: E402
from llmrun.backends.local.training import train_local  # noqa: E402
from llmrun.testing.checkpoints import install_in_hf_cache  # noqa: E402

DATA = [TrainingExample(f"Q{i}: colour of item {i}?", ["red", "blue"][i % 2], " ") for i in range(8)]


@pytest.fixture(autouse=True)
def _restore_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _load(folder: Path) -> tuple[Any, Any]:
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    return model, transformers.AutoTokenizer.from_pretrained(folder)


# ----------------------------------------------------------------------------- unsafe values
@pytest.mark.parametrize("name", ["trust_remote_code", "allow_pickle", "truncate_prompt", "progress"])
def test_local_runner_built_by_hand_rejects_string_booleans(name: str, tiny_gpt_neox_dir: Path) -> None:
    with pytest.raises(ConfigurationError, match=rf"{name}='no' \(argument\).*True or False"):
        LocalRunner(str(tiny_gpt_neox_dir), **{name: "no"})


@pytest.mark.parametrize("name", ["trust_remote_code", "allow_pickle"])
def test_load_settings_reject_string_booleans(name: str) -> None:
    with pytest.raises(ConfigurationError, match=rf"{name}='no'"):
        LoadSettings(**{name: "no"})  # type: ignore[arg-type]


def test_allow_pickle_no_in_config_file_is_an_error(
    tiny_gpt_neox_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "llmrun.toml"
    config.write_text('[local]\nallow_pickle = "no"\n')
    monkeypatch.setenv("LLMRUN_CONFIG", str(config))
    with pytest.raises(ConfigurationError, match=r"allow_pickle='no'.*\[local\].*allow_pickle = false"):
        llmrun.load(str(tiny_gpt_neox_dir))


def test_devcie_typo_in_local_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "llmrun.toml"
    config.write_text('[local]\ndevcie = "cuda"\n')
    monkeypatch.setenv("LLMRUN_CONFIG", str(config))
    with pytest.raises(ConfigurationError, match=r"unknown key 'devcie'.*did you mean 'device'"):
        llmrun.load("m")


@pytest.mark.parametrize("device", ["xla", "meta", "ipu"])
def test_devices_without_usable_weights_are_refused(device: str) -> None:
    with pytest.raises(ConfigurationError, match=rf"device '{device}' is not supported by the local backend"):
        resolve_device(device)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Eleuther AI/pythia 70m", "no spaces"),
        ("EleutherAI/pythia\x00-70m", "NUL character"),
        ("org/na me", "no spaces"),
    ],
)
def test_odd_model_names_are_llmrun_errors(name: str, expected: str) -> None:
    with pytest.raises(ModelNotFoundError, match=expected):
        locate_model(name, LoadSettings())


def test_bin_only_cached_model_mentions_allow_pickle(
    tiny_gpt_neox_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_gpt_neox_dir, pickled)
    model, _ = _load(pickled)
    (pickled / "model.safetensors").unlink()
    torch.save(model.state_dict(), pickled / "pytorch_model.bin")
    cache = tmp_path / "cache"
    install_in_hf_cache(pickled, "tiny-org/pickled-only", cache)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(
        ModelLoadError, match=r"only pickle weights \(pytorch_model\.bin\).*allow_pickle=True"
    ):
        locate_model("tiny-org/pickled-only", LoadSettings(cache_dir=str(cache)))
    assert locate_model("tiny-org/pickled-only", LoadSettings(cache_dir=str(cache), allow_pickle=True))


# ----------------------------------------------------------------------------- checkpoints
def _training_objects(folder: Path) -> tuple[Any, Any, Any]:
    model, _ = _load(folder)
    for p in model.parameters():
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return model, optimizer, scheduler


def _two_checkpoints(folder: Path, run_dir: Path, keep: int) -> Any:
    model, optimizer, scheduler = _training_objects(folder)
    for step in (2, 4):
        checkpointing.save_checkpoint(run_dir, step, model, optimizer, scheduler, {"step": step}, keep=keep)
    return model, optimizer, scheduler


@pytest.mark.parametrize("damage", ["truncate", "tamper"])
def test_resume_falls_back_to_the_older_good_checkpoint(
    damage: str, tiny_gpt_neox_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run_dir = tmp_path / "run"
    _two_checkpoints(tiny_gpt_neox_dir, run_dir, keep=2)
    newest = checkpointing.latest_checkpoint(run_dir)
    assert newest is not None
    assert newest.step == 4
    weights = newest.path / "trainable.safetensors"
    data = bytearray(weights.read_bytes())
    if damage == "truncate":
        weights.write_bytes(data[: len(data) // 2])
    else:  # same size, one value changed: only the checksum can tell
        data[-5] ^= 0xFF
        weights.write_bytes(bytes(data))
    assert checkpointing.checkpoint_problem(newest) is not None

    model, optimizer, scheduler = _training_objects(tiny_gpt_neox_dir)
    with caplog.at_level("WARNING", logger="llmrun.training"):
        state = checkpointing.load_checkpoint(newest, model, optimizer, scheduler)
    assert state["step"] == 2
    assert "is damaged" in caplog.text


def test_damaged_checkpoint_without_an_older_one_says_what_to_do(
    tiny_gpt_neox_dir: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    _two_checkpoints(tiny_gpt_neox_dir, run_dir, keep=1)
    newest = checkpointing.latest_checkpoint(run_dir)
    assert newest is not None
    (newest.path / "optimizer.pt").write_bytes(b"truncated")
    model, optimizer, scheduler = _training_objects(tiny_gpt_neox_dir)
    with pytest.raises(TrainingError, match=r"no older checkpoint.*keep_checkpoints=2"):
        checkpointing.load_checkpoint(newest, model, optimizer, scheduler)


def test_full_disk_says_disk(
    tiny_gpt_neox_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """safetensors reports ENOSPC as its own exception type: it must become a TrainingError saying disk."""
    from safetensors import SafetensorError

    def full_disk(tensors: Any, filename: str) -> None:
        # the message safetensors gives on a full tmpfs, recorded from a real run
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(checkpointing, "save_file", full_disk)
    model, optimizer, scheduler = _training_objects(tiny_gpt_neox_dir)
    run_dir = tmp_path / "run"
    with pytest.raises(TrainingError, match=r"the disk is full \(ENOSPC") as info:
        checkpointing.save_checkpoint(run_dir, 1, model, optimizer, scheduler, {"step": 1})
    assert "runs_dir" in str(info.value)
    assert list((run_dir / "checkpoints").iterdir()) == []  # no half-written folder


def test_unwritable_runs_folder_fails_before_training(tiny_gpt_neox_dir: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    model, tokenizer = _load(tiny_gpt_neox_dir)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with pytest.raises(TrainingError, match=r"cannot write the run directory .*unchanged.*runs_dir"):
        train_local(
            LocalEngine(model, tokenizer),
            DATA,
            TrainOptions(max_steps=2),
            blocker / "runs" / "r1",
            progress=False,
        )
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())  # not a single step ran


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders; the file case above runs")
def test_read_only_runs_folder_fails_before_training(tiny_gpt_neox_dir: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    runs.chmod(0o555)
    try:
        with pytest.raises(TrainingError, match="cannot write the run directory"):
            checkpointing.ensure_writable(runs / "r1")
    finally:
        runs.chmod(0o755)


def test_write_check_leaves_nothing_behind(tmp_path: Path) -> None:
    checkpointing.ensure_writable(tmp_path / "a" / "b")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_tuned_model_honours_the_umask(umask: int, tiny_gpt_neox_dir: Path, tmp_path: Path) -> None:
    model, tokenizer = _load(tiny_gpt_neox_dir)
    old = os.umask(umask)
    try:
        result = train_local(
            LocalEngine(model, tokenizer), DATA, TrainOptions(max_steps=1), tmp_path / "run", progress=False
        )
    finally:
        os.umask(old)
    model_dir = Path(result.model_name)
    assert stat.S_IMODE(model_dir.stat().st_mode) == 0o777 & ~umask
    for path in model_dir.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path.name


def test_completed_run_keeps_no_optimizer_moments(tiny_gpt_neox_dir: Path, tmp_path: Path) -> None:
    model, tokenizer = _load(tiny_gpt_neox_dir)
    options = TrainOptions(max_steps=2, save_every_steps=1, keep_checkpoints=2, method="full")
    result = train_local(LocalEngine(model, tokenizer), DATA, options, tmp_path / "run", progress=False)
    assert result.run_dir is not None
    final = checkpointing.list_checkpoints(result.run_dir)
    assert [c.step for c in final] == [2]  # the older one kept during the run is gone
    assert checkpointing.checkpoint_problem(final[0]) is None  # rewritten whole, checksums included
    saved = torch.load(final[0].path / "optimizer.pt", weights_only=True)
    assert saved["optimizer"]["state"] == {}
    weights = (Path(result.model_name) / "model.safetensors").stat().st_size
    written = sum(p.stat().st_size for p in result.run_dir.rglob("*") if p.is_file())
    assert written < 2.5 * weights  # model + final weights + loss curve; AdamW's moments were 2x more


# ----------------------------------------------------------------------------- threads
def test_threads_option_sets_torch_threads(tiny_gpt_neox_dir: Path) -> None:
    torch.set_num_threads(2)
    LocalRunner(str(tiny_gpt_neox_dir), threads=1)
    assert torch.get_num_threads() == 1


def test_threads_from_env_and_errors(tiny_gpt_neox_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.set_num_threads(2)
    monkeypatch.setenv("LLMRUN_THREADS", "1")
    llmrun.load(str(tiny_gpt_neox_dir))
    assert torch.get_num_threads() == 1
    monkeypatch.setenv("LLMRUN_THREADS", "many")
    with pytest.raises(ConfigurationError, match="LLMRUN_THREADS='many' is not a valid int"):
        llmrun.load(str(tiny_gpt_neox_dir))
    monkeypatch.delenv("LLMRUN_THREADS")
    with pytest.raises(ConfigurationError, match=r"threads=0 is invalid"):
        llmrun.load(str(tiny_gpt_neox_dir), threads=0)


def test_default_threads_never_oversubscribe(monkeypatch: pytest.MonkeyPatch) -> None:
    cpus = threads.usable_cpus()
    monkeypatch.setattr(os, "getloadavg", lambda: (float(cpus) + 3.0, 0.0, 0.0))  # every core busy
    assert threads.default_threads(current=cpus) == 1
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))  # idle: torch's own count
    assert threads.default_threads(current=cpus) == cpus
    assert threads.default_threads(current=1) == 1  # never more than torch's default
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    assert threads.apply_threads(None) == 1  # OMP_NUM_THREADS is left to torch


# ----------------------------------------------------------------------------- noise
def test_load_and_train_are_quiet(
    tiny_gpt_neox_dir: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runner = LocalRunner(str(tiny_gpt_neox_dir), progress=False, runs_dir=str(tmp_path / "runs"))
        runner.train_examples(list(DATA), TrainOptions.from_kwargs(max_steps=1, method="lora"))
        runner.train_examples(list(DATA), TrainOptions.from_kwargs(max_steps=1, method="full"))
    err = capfd.readouterr().err
    assert "Loading weights" not in err
    assert "Writing model shards" not in err
    assert [str(w.message) for w in caught if issubclass(w.category, FutureWarning)] == []


def test_killed_run_resumes_past_a_damaged_checkpoint(
    tiny_gpt_neox_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run killed after step 3 whose step-3 checkpoint is then truncated resumes from step 2
    (kept by keep_checkpoints=2) and ends as the uninterrupted run does."""
    options = TrainOptions(max_steps=4, save_every_steps=1, keep_checkpoints=2, learning_rate=1e-3)
    model, tokenizer = _load(tiny_gpt_neox_dir)
    reference = train_local(LocalEngine(model, tokenizer), DATA, options, tmp_path / "ref", progress=False)

    real_save = checkpointing.save_checkpoint

    def save_then_die(run_dir: Path, step: int, *args: Any, **kwargs: Any) -> Any:
        saved = real_save(run_dir, step, *args, **kwargs)
        if step == 3:
            raise KeyboardInterrupt  # killed right after the step-3 checkpoint is in place
        return saved

    monkeypatch.setattr(checkpointing, "save_checkpoint", save_then_die)
    run_dir = tmp_path / "run"
    model, tokenizer = _load(tiny_gpt_neox_dir)
    with pytest.raises(KeyboardInterrupt):
        train_local(LocalEngine(model, tokenizer), DATA, options, run_dir, progress=False)
    monkeypatch.undo()
    newest = checkpointing.latest_checkpoint(run_dir)
    assert newest is not None
    assert newest.step == 3
    weights = newest.path / "trainable.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # a torn write

    model, tokenizer = _load(tiny_gpt_neox_dir)
    resumed = train_local(
        LocalEngine(model, tokenizer), DATA, options.merged(resume=True), run_dir, progress=False
    )
    assert [s for s, _ in resumed.loss_history] == [1, 2, 3, 4]
    for (_, a), (_, b) in zip(resumed.loss_history, reference.loss_history, strict=True):
        assert a == pytest.approx(b, rel=1e-4, abs=1e-5)


def test_lora_helpers_raise_no_future_warnings(tiny_gpt_neox_dir: Path) -> None:
    from llmrun.backends.local import lora

    model, _ = _load(tiny_gpt_neox_dir)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lora.add_lora(model, TrainOptions(method="lora"))
    assert [str(w.message) for w in caught if issubclass(w.category, FutureWarning)] == []
