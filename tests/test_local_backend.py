"""The local backend through its real loading and generation code, on tiny random-weight checkpoints."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

import llmrun
from llmrun.backends.local import LocalRunner
from llmrun.errors import (
    ConfigurationError,
    DeviceError,
    ModelLoadError,
    ModelNotFoundError,
    PromptTooLongError,
)
from llmrun.testing.checkpoints import TINY_REPO_IDS
from llmrun.testing.fixtures import TinyHFCache

FAMILIES = ["gpt_neox", "llama"]
PROMPTS = [
    "The highest mountain in the world is",
    "Hello",
    "1, 2, 3, 4,",
    "Question: Why is the sky blue? Answer:",
]


@pytest.fixture(scope="module", params=FAMILIES)
def runner(request: pytest.FixtureRequest, tiny_checkpoint_dirs: dict[str, Path]) -> LocalRunner:
    loaded = llmrun.load(str(tiny_checkpoint_dirs[request.param]), backend="local", device="cpu")
    assert isinstance(loaded, LocalRunner)
    return loaded


def test_loads_from_folder_with_auto_device_and_dtype(runner: LocalRunner) -> None:
    import torch

    assert runner.device.type == "cpu"
    assert next(runner.model.parameters()).dtype == torch.float32
    assert not runner.model.training


def test_greedy_is_deterministic(runner: LocalRunner) -> None:
    first = runner(PROMPTS[0], max_new_tokens=12)
    assert isinstance(first, str)
    assert first
    assert runner(PROMPTS[0], max_new_tokens=12) == first


def test_batch_equals_single(runner: LocalRunner) -> None:
    batch = runner(PROMPTS, max_new_tokens=12)
    assert batch == [runner(p, max_new_tokens=12) for p in PROMPTS]


def test_batches_larger_than_max_batch_size_run_in_chunks(runner: LocalRunner) -> None:
    expected = runner(PROMPTS, max_new_tokens=6)
    runner.max_batch_size = 3
    try:
        assert runner(PROMPTS, max_new_tokens=6) == expected
    finally:
        runner.max_batch_size = 32


def test_returns_only_new_text(runner: LocalRunner) -> None:
    import torch

    ids = runner.tokenizer(PROMPTS[0], return_tensors="pt")
    with torch.no_grad():
        padding_ids = list(range(len(runner.tokenizer), runner.model.get_output_embeddings().weight.shape[0]))
        full = runner.model.generate(
            **ids,
            max_new_tokens=8,
            do_sample=False,
            pad_token_id=runner.tokenizer.pad_token_id,
            suppress_tokens=padding_ids,  # the runner never emits ids past the tokenizer's vocabulary
        )
    expected = runner.tokenizer.decode(full[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    assert runner(PROMPTS[0], max_new_tokens=8) == expected


def test_stop_sequences_cut_the_text(runner: LocalRunner) -> None:
    free = runner(PROMPTS[3], max_new_tokens=24)
    visible = [ch for ch in free[2:] if ch.isprintable() and not ch.isspace()]
    assert visible, f"need some text to stop on, got {free!r}"
    stop = visible[0]
    cut = runner(PROMPTS[3], max_new_tokens=24, stop=[stop])
    assert stop not in cut
    assert free.startswith(cut)
    assert len(cut) < len(free)


def test_sampling_is_seeded(runner: LocalRunner) -> None:
    a = runner(PROMPTS[1], max_new_tokens=10, temperature=1.0, seed=5)
    assert a == runner(PROMPTS[1], max_new_tokens=10, temperature=1.0, seed=5)
    others = {runner(PROMPTS[1], max_new_tokens=10, temperature=1.0, seed=s) for s in range(6, 10)}
    assert others - {a}


def test_stream_pieces_join_to_the_full_text(runner: LocalRunner) -> None:
    pieces = list(runner.stream(PROMPTS[0], max_new_tokens=16))
    assert len(pieces) > 1
    assert "".join(pieces) == runner(PROMPTS[0], max_new_tokens=16)


def test_stream_respects_stop_sequences(runner: LocalRunner) -> None:
    expected = runner(PROMPTS[3], max_new_tokens=20, stop=["e"])
    assert "".join(runner.stream(PROMPTS[3], max_new_tokens=20, stop=["e"])) == expected


async def test_concurrent_agenerate_does_not_block_the_event_loop(runner: LocalRunner) -> None:
    ticks = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0.001)

    tick_task = asyncio.create_task(ticker())
    results = await asyncio.gather(*(runner.agenerate(p, max_new_tokens=24) for p in PROMPTS))
    done.set()
    await tick_task
    assert results == [runner(p, max_new_tokens=24) for p in PROMPTS]
    assert ticks > 5  # the loop kept running while four generations were in flight


def test_prompt_longer_than_context(runner: LocalRunner) -> None:
    long_prompt = "word " * (runner.context_length + 10)
    with pytest.raises(
        PromptTooLongError, match=r"exceeds the model's context of \d+ tokens.*truncate_prompt"
    ):
        runner(long_prompt, max_new_tokens=4)


def test_truncate_prompt_option(tiny_gpt_neox_dir: Path) -> None:
    runner = llmrun.load(str(tiny_gpt_neox_dir), device="cpu", truncate_prompt=True)
    long_prompt = "word " * 2000
    assert isinstance(runner(long_prompt, max_new_tokens=4), str)


# ----------------------------------------------------------------- loading through the HF cache


@pytest.mark.parametrize("family", FAMILIES)
def test_loads_hub_id_from_cache_offline(
    offline_hf_cache: TinyHFCache, family: str, no_network: None
) -> None:
    runner = llmrun.load(TINY_REPO_IDS[family], device="cpu")  # type: ignore[index]
    assert isinstance(runner(PROMPTS[1], max_new_tokens=4), str)


def test_uncached_hub_id_offline_says_how_to_fix(offline_hf_cache: TinyHFCache) -> None:
    with pytest.raises(
        ModelNotFoundError, match=r"not in the Hugging Face cache.*HF_HUB_OFFLINE=1.*download"
    ):
        llmrun.load("EleutherAI/not-cached-anywhere", device="cpu")


# ----------------------------------------------------------------- bad input


def test_folder_without_config(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"has no config.json"):
        llmrun.load(str(tmp_path), device="cpu")


def test_folder_without_weights(tmp_path: Path, tiny_gpt_neox_dir: Path) -> None:
    shutil.copy(tiny_gpt_neox_dir / "config.json", tmp_path / "config.json")
    with pytest.raises(ModelLoadError, match=r"no model weights \(expected model.safetensors\)"):
        llmrun.load(str(tmp_path), device="cpu")


def test_pickle_weights_are_refused_unless_allowed(tmp_path: Path, tiny_gpt_neox_dir: Path) -> None:
    shutil.copy(tiny_gpt_neox_dir / "config.json", tmp_path / "config.json")
    (tmp_path / "pytorch_model.bin").write_bytes(b"not really a pickle")
    with pytest.raises(ModelLoadError, match=r"only pickle weights.*allow_pickle=True"):
        llmrun.load(str(tmp_path), device="cpu")


def test_cuda_on_a_machine_without_it() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA, so asking for it is not an error here")
    with pytest.raises(DeviceError, match=r"CUDA is not available.*device='cpu'"):
        llmrun.load("any/model", device="cuda")


@pytest.mark.parametrize(("option", "value", "message"), [
    ("device", "tpu-ish", "is not a device name"),
    ("dtype", "int3", "dtype 'int3' is not supported"),
    ("max_batch_size", 0, "max_batch_size=0 is invalid"),
])  # fmt: skip
def test_bad_local_options(tiny_gpt_neox_dir: Path, option: str, value: object, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        llmrun.load(str(tiny_gpt_neox_dir), **{option: value})


def test_not_a_folder_nor_a_hub_id() -> None:
    with pytest.raises(ModelNotFoundError, match="not a folder with a checkpoint"):
        llmrun.load("./no/such/folder", device="cpu")


def test_seed_snippets_run_locally_offline(
    offline_hf_cache: TinyHFCache, monkeypatch: pytest.MonkeyPatch, no_network: None
) -> None:
    """The 2023 notebooks, with only the import changed, on a cached model and no network."""
    monkeypatch.setenv("LLMRUN_MODEL", TINY_REPO_IDS["gpt_neox"])
    monkeypatch.setenv("LLMRUN_DEVICE", "cpu")
    from llmrun import BasicModelRunner, Context, LLMEngine, Type

    model = BasicModelRunner(TINY_REPO_IDS["gpt_neox"])
    output = model("Question: What is the highest mountain in the world? Answer:")
    assert isinstance(output, str)

    class Test(Type):
        test_string: str = Context("just a test")

    llm = LLMEngine(id="example_llm")
    test = Test(test_string="testing")
    result = llm(test, output_type=Test)
    assert isinstance(result, Test)
