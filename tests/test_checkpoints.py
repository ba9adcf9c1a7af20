"""Tiny checkpoints, trained tokenizers, the HF-cache layout, the demo installer and the network guard."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from llmrun.errors import ConfigurationError, InvalidInputError
from llmrun.testing import checkpoints as ck
from llmrun.testing.fixtures import NetworkBlockedError, TinyHFCache, block_network

torch = pytest.importorskip("torch", reason="the checkpoint builder needs the 'local' extra (torch)")
transformers = pytest.importorskip("transformers", reason="the checkpoint builder needs transformers")
safetensors_torch = pytest.importorskip("safetensors.torch", reason="needs safetensors")

FAMILIES: tuple[ck.Family, ...] = ("gpt_neox", "llama")
EXPECTED_CLASS = {"gpt_neox": "GPTNeoXForCausalLM", "llama": "LlamaForCausalLM"}
TEXTS = [
    "Question: What is the highest mountain in the world? Answer:",
    '{"answer": "Mount Everest", "confidence": 0.9, "tags": ["a", "b"], "ok": true, "n": null}',
    '[{"id": 0}, {"id": -12.5e3}]',
    "  two  leading spaces,\ttabs\nand newlines  ",
    "Digits 0123456789 and punctuation !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~",
]


@pytest.fixture(scope="module")
def byte_bpe() -> Any:
    return ck.train_byte_level_bpe_tokenizer()


@pytest.fixture(scope="module")
def spiece() -> Any:
    return ck.train_sentencepiece_style_tokenizer()


# --------------------------------------------------------------------------- tokenizers


@pytest.mark.parametrize("text", TEXTS)
def test_byte_level_bpe_round_trips(byte_bpe: Any, text: str) -> None:
    ids = byte_bpe(text)["input_ids"]
    assert byte_bpe.decode(ids) == text


def test_byte_level_bpe_is_gpt_neox_like(byte_bpe: Any) -> None:
    eos = "<|endoftext|>"
    assert (byte_bpe.bos_token, byte_bpe.eos_token, byte_bpe.unk_token) == (eos, eos, eos)
    assert byte_bpe.eos_token_id == 0
    assert byte_bpe.pad_token is None
    assert 300 < len(byte_bpe) <= 512
    ids = byte_bpe("Hello world")["input_ids"]
    assert byte_bpe.eos_token_id not in ids  # no BOS/EOS added
    assert byte_bpe.convert_tokens_to_ids(eos) == 0
    assert byte_bpe(eos)["input_ids"] == [0]  # the special token is one token in text
    assert byte_bpe.decode(byte_bpe("héllo 日本 ✓")["input_ids"]) == "héllo 日本 ✓"  # bytes cover all text


def test_tokenizers_learn_json_and_qa_merges(byte_bpe: Any, spiece: Any) -> None:
    for tok in (byte_bpe, spiece):
        for text in TEXTS[:2]:
            assert len(tok(text, add_special_tokens=False)["input_ids"]) < 0.6 * len(text)


@pytest.mark.parametrize("text", [*TEXTS, "héllo wörld ✓ 日本", ""])
def test_sentencepiece_style_round_trips_and_adds_bos(spiece: Any, text: str) -> None:
    ids = spiece(text)["input_ids"]
    assert ids[0] == spiece.bos_token_id == 1
    assert spiece.eos_token_id not in ids
    assert spiece.decode(ids, skip_special_tokens=True) == text


def test_sentencepiece_style_is_llama_like(spiece: Any) -> None:
    assert (spiece.unk_token_id, spiece.bos_token_id, spiece.eos_token_id) == (0, 1, 2)
    assert spiece.pad_token is None
    assert spiece.convert_ids_to_tokens([3, 258]) == ["<0x00>", "<0xFF>"]
    tokens = spiece.convert_ids_to_tokens(spiece("the world")["input_ids"])
    assert all(t.startswith("▁") for t in tokens[1:2])  # words carry the ▁ prefix
    assert "<0xE6>" in spiece.convert_ids_to_tokens(spiece("日")["input_ids"])  # byte fallback


def test_tokenizer_training_is_deterministic(byte_bpe: Any, spiece: Any) -> None:
    assert ck.train_byte_level_bpe_tokenizer().get_vocab() == byte_bpe.get_vocab()
    assert ck.train_sentencepiece_style_tokenizer().get_vocab() == spiece.get_vocab()


def test_vocab_size_too_small_is_rejected() -> None:
    with pytest.raises(InvalidInputError, match="vocab_size=100"):
        ck.train_byte_level_bpe_tokenizer(100)
    with pytest.raises(InvalidInputError, match="at least"):
        ck.train_sentencepiece_style_tokenizer(300)


# --------------------------------------------------------------------------- checkpoints


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_checkpoint_loads_from_folder(
    tiny_checkpoint_dirs: dict[ck.Family, Path], family: ck.Family
) -> None:
    folder = tiny_checkpoint_dirs[family]
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json"} <= {
        p.name for p in folder.iterdir()
    }
    model = transformers.AutoModelForCausalLM.from_pretrained(folder)
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    assert type(model).__name__ == EXPECTED_CLASS[family]
    cfg = model.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads) == (2, 64, 4)
    assert cfg.max_position_embeddings == ck.TINY_CONTEXT == 512
    assert cfg.vocab_size == ck.padded_vocab_size(len(tok)) > len(tok)
    assert model.generation_config.eos_token_id == tok.eos_token_id
    enc = tok(TEXTS[0], return_tensors="pt")
    with torch.no_grad():
        logits = model(**enc).logits  # [1, S, V]
    assert logits.shape == (1, enc["input_ids"].shape[1], cfg.vocab_size)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_checkpoint_loads_offline_from_hf_cache(
    offline_hf_cache: TinyHFCache, no_network: None, family: ck.Family
) -> None:
    repo_id = offline_hf_cache.repo_ids[family]
    repo_dir = offline_hf_cache.cache_dir / ("models--" + repo_id.replace("/", "--"))
    commit = (repo_dir / "refs" / "main").read_text()
    snapshot = repo_dir / "snapshots" / commit
    weights = snapshot / "model.safetensors"
    assert weights.is_symlink()
    assert weights.resolve().parent == (repo_dir / "blobs").resolve()
    assert len(weights.resolve().name) == 64  # sha256

    model = transformers.AutoModelForCausalLM.from_pretrained(repo_id)
    tok = transformers.AutoTokenizer.from_pretrained(repo_id)
    assert type(model).__name__ == EXPECTED_CLASS[family]
    assert tok.decode(tok(TEXTS[1])["input_ids"], skip_special_tokens=True) == TEXTS[1]


def test_offline_hf_cache_sets_env_for_subprocesses(offline_hf_cache: TinyHFCache) -> None:
    code = (
        "import json, huggingface_hub as h, huggingface_hub.constants as c; "
        "path = h.hf_hub_download('llmrun-testing/tiny-llama', 'config.json'); "
        "print(c.HF_HUB_OFFLINE, json.load(open(path))['model_type'])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "llama"]


def test_weights_are_deterministic_for_a_seed(tmp_path: Path, tiny_gpt_neox_dir: Path) -> None:
    reference = safetensors_torch.load_file(tiny_gpt_neox_dir / "model.safetensors")
    same = safetensors_torch.load_file(
        ck.build_tiny_checkpoint(tmp_path / "same", "gpt_neox", seed=0) / "model.safetensors"
    )
    other = safetensors_torch.load_file(
        ck.build_tiny_checkpoint(tmp_path / "other", "gpt_neox", seed=1) / "model.safetensors"
    )
    assert reference.keys() == same.keys() == other.keys()
    assert all(torch.equal(reference[k], same[k]) for k in reference)
    assert not torch.equal(reference["gpt_neox.embed_in.weight"], other["gpt_neox.embed_in.weight"])


def test_build_checkpoint_rejects_bad_input(tmp_path: Path, tiny_llama_dir: Path, byte_bpe: Any) -> None:
    with pytest.raises(ConfigurationError, match="gpt_neox, llama"):
        ck.build_tiny_checkpoint(tmp_path / "x", "gpt2")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="already contains a checkpoint"):
        ck.build_tiny_checkpoint(tiny_llama_dir, "llama")
    small = ck.tiny_config("gpt_neox", 128, bos_token_id=0, eos_token_id=0)
    with pytest.raises(InvalidInputError, match="vocab_size is 128"):
        ck.build_checkpoint(tmp_path / "y", small, byte_bpe)


def test_reference_configs() -> None:
    assert ck.padded_vocab_size(50277) == 50304
    pythia = ck.pythia_70m_config()
    assert (pythia.model_type, pythia.num_hidden_layers, pythia.hidden_size, pythia.num_attention_heads) == (
        "gpt_neox",
        6,
        512,
        8,
    )
    assert (pythia.intermediate_size, pythia.vocab_size) == (2048, 50304)
    assert pythia.rope_parameters["partial_rotary_factor"] == 0.25  # transformers 5 spelling of rotary_pct
    assert (pythia.max_position_embeddings, pythia.use_parallel_residual) == (2048, True)


# --------------------------------------------------------------------------- HF cache layout


def test_install_in_hf_cache_is_idempotent_and_validates(tmp_path: Path, tiny_llama_dir: Path) -> None:
    first = ck.install_in_hf_cache(tiny_llama_dir, "org/model", tmp_path)
    second = ck.install_in_hf_cache(tiny_llama_dir, "org/model", tmp_path)
    assert first == second
    assert first.name == ck.checkpoint_commit_hash(tiny_llama_dir)
    blobs = list((tmp_path / "models--org--model" / "blobs").iterdir())
    assert len(blobs) == len(list(tiny_llama_dir.iterdir()))
    with pytest.raises(InvalidInputError, match="invalid hub repo id"):
        ck.install_in_hf_cache(tiny_llama_dir, "a/b/c", tmp_path)
    with pytest.raises(InvalidInputError, match=r"no config\.json"):
        ck.install_in_hf_cache(tmp_path, "org/other", tmp_path)


def test_use_hf_cache_restores_settings(tmp_path: Path) -> None:
    import huggingface_hub.constants as hf_constants

    before = (hf_constants.HF_HUB_CACHE, hf_constants.HF_HUB_OFFLINE, os.environ.get("HF_HUB_CACHE"))
    with ck.use_hf_cache(tmp_path):
        assert hf_constants.HF_HUB_CACHE == os.environ["HF_HUB_CACHE"] == str(tmp_path)
        assert hf_constants.HF_HUB_OFFLINE is True
    assert (hf_constants.HF_HUB_CACHE, hf_constants.HF_HUB_OFFLINE, os.environ.get("HF_HUB_CACHE")) == before


def test_install_demo_pythia_with_a_stand_in_tokenizer(
    tmp_path: Path, tiny_gpt_neox_dir: Path, no_network: None
) -> None:
    # The real tokenizer lives outside the repo; the tiny one has the same format and proves the wiring.
    snapshot = ck.install_demo_pythia(tmp_path / "cache", tiny_gpt_neox_dir / "tokenizer.json")
    config = json.loads((snapshot / "config.json").read_text())
    assert (config["architectures"], config["vocab_size"], config["dtype"]) == (
        ["GPTNeoXForCausalLM"],
        50304,
        "float16",
    )
    with ck.use_hf_cache(tmp_path / "cache"):
        tok = transformers.AutoTokenizer.from_pretrained(ck.DEMO_PYTHIA_REPO_ID)
    assert tok.eos_token == tok.bos_token == "<|endoftext|>"
    assert tok.pad_token is None


def test_tokenizer_loaders_report_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="tokenizer file not found"):
        ck.load_pythia_tokenizer(tmp_path / "missing.json")
    with pytest.raises(ConfigurationError, match="tokenizer file not found"):
        ck.load_llama2_tokenizer(tmp_path / "tokenizer.model")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigurationError, match="not a valid tokenizers JSON"):
        ck.load_pythia_tokenizer(bad)


def test_cli_reports_a_missing_tokenizer_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope" / "tokenizer.json"
    with pytest.raises(SystemExit) as exit_info:
        ck.main(["install-demo-pythia", "--tokenizer", str(missing), "--cache-dir", str(tmp_path)])
    assert exit_info.value.code == 2
    assert f"--tokenizer: file not found: {missing}" in capsys.readouterr().err
    assert not (tmp_path / "models--EleutherAI--pythia-70m").exists()


def test_cli_runs_as_a_module(tmp_path: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "llmrun.testing.checkpoints",
        "install-demo-pythia",
        "--tokenizer",
        "/nope.json",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "file not found: /nope.json" in out.stderr
    help_out = subprocess.run([*cmd[:3], "--help"], capture_output=True, text=True, timeout=60)
    assert help_out.returncode == 0
    assert "install-demo-pythia" in help_out.stdout


# --------------------------------------------------------------------------- network guard


def test_network_guard_blocks_non_loopback(no_network: None) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock, pytest.raises(NetworkBlockedError):
        sock.connect(("10.255.255.1", 80))
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock, pytest.raises(NetworkBlockedError):
        sock.connect_ex(("93.184.216.34", 443))
    with pytest.raises(NetworkBlockedError, match="name lookup"):
        socket.create_connection(("huggingface.co", 443), timeout=1)


def test_network_guard_allows_loopback() -> None:
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        with block_network():
            with socket.create_connection(("127.0.0.1", port), timeout=5):
                pass
            with socket.create_connection(("localhost", port), timeout=5):
                pass
    assert (socket.socket.connect, socket.getaddrinfo) == (real_connect, real_getaddrinfo)  # restored
