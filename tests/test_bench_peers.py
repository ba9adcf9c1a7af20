"""The peer benchmark's parts that can rot quietly: its conversions and its report.

The benchmark itself (``nox -s bench-peers``) is not part of the test run; these tests check that
the converted models compute what the checkpoint computes (CTranslate2: the same greedy tokens;
GGUF: the tensors llama.cpp expects, q/k/v reordered), where the peer packages are installed.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def peers() -> Any:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import bench_peers
        import peer_formats

        yield bench_peers, peer_formats
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_agreement_counts_rows_and_prefixes(peers: Any) -> None:
    bench_peers, _ = peers
    ref = [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert bench_peers.agreement(ref, ref) == {"rows_equal": 1.0, "prefix_share": 1.0}
    got = bench_peers.agreement([[1, 2, 9, 4], [0, 6, 7, 8]], ref)
    assert got == {"rows_equal": 0.0, "prefix_share": 0.25}  # (2/4 + 0/4) / 2


def test_table_has_every_engine_and_every_skip(peers: Any) -> None:
    bench_peers, _ = peers
    row = {
        "tok_s": 100.0,
        "ratio": 1.5,
        "agreement_with_llmrun_float32": {"rows_equal": 1.0, "prefix_share": 1.0},
    }
    report = {
        "batches": {
            "1": {"engines": {"llmrun": row}},
            "32": {"engines": {"llmrun": {**row, "tok_s": 900.0}}},
        },
        "skipped": {"llama.cpp-q8_0": "llama-cpp-python did not build"},
    }
    text = bench_peers.table(report)
    assert "| llmrun | 100 (1.50x) | 900 (1.50x) | 100% (prefix 100%) |" in text
    assert "llama.cpp-q8_0 | skipped: llama-cpp-python did not build" in text


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, peers: Any) -> Path:
    from bench_generate import build_benchmark_checkpoint

    folder = tmp_path_factory.mktemp("peers") / "checkpoint"
    build_benchmark_checkpoint(folder, tiny=True)
    return folder


def test_gguf_holds_the_checkpoint_as_llama_cpp_reads_it(
    peers: Any, checkpoint: Path, tmp_path: Path
) -> None:
    gguf = pytest.importorskip("gguf")
    from safetensors.torch import load_file
    from transformers import AutoConfig

    _, peer_formats = peers
    config: Any = AutoConfig.from_pretrained(checkpoint)
    state = load_file(str(checkpoint / "model.safetensors"))
    heads, hidden = config.num_attention_heads, config.hidden_size
    path = peer_formats.convert_gguf(checkpoint, tmp_path / "m.gguf", "f32")
    reader = gguf.GGUFReader(str(path))
    tensors = {t.name: t for t in reader.tensors}
    assert len(tensors) == 4 + 12 * config.num_hidden_layers
    qkv = torch.from_numpy(tensors["blk.0.attn_qkv.weight"].data.copy()).reshape(3 * hidden, hidden)
    hf = state["gpt_neox.layers.0.attention.query_key_value.weight"].view(heads, 3, hidden // heads, hidden)
    torch.testing.assert_close(qkv[:hidden], hf[:, 0].reshape(hidden, hidden))  # q block first
    torch.testing.assert_close(qkv[2 * hidden :], hf[:, 2].reshape(hidden, hidden))  # v block last
    head = torch.from_numpy(tensors["output.weight"].data.copy())
    torch.testing.assert_close(head.reshape(state["lm_head.weight"].shape), state["lm_head.weight"])
    tokens = reader.fields["tokenizer.ggml.tokens"]
    assert len(tokens.data) == config.vocab_size  # padded to the embedding's width
    q8 = gguf.GGUFReader(str(peer_formats.convert_gguf(checkpoint, tmp_path / "q.gguf", "q8_0")))
    types = {t.name: t.tensor_type.name for t in q8.tensors}
    assert types["blk.0.ffn_up.weight"] == "Q8_0"
    assert types["blk.0.ffn_up.bias"] == "F32"


def test_ctranslate2_conversion_generates_transformers_tokens(
    peers: Any, checkpoint: Path, tmp_path: Path
) -> None:
    pytest.importorskip("ctranslate2")
    bench_peers, peer_formats = peers
    peer_formats.convert_ctranslate2(checkpoint, tmp_path / "ct2")
    rows = [[5, 9, 17, 33, 2], [40, 41]]
    ct2 = bench_peers.engine_ct2(checkpoint, tmp_path, 1, "float32")(rows, 8)
    plain = bench_peers.engine_transformers(checkpoint)(rows, 8)
    assert ct2 == plain
    assert [len(r) for r in ct2] == [8, 8]


def test_before_needs_a_checkout_and_names_its_engines(peers: Any, tmp_path: Path) -> None:
    """``--before SRC`` refuses a folder without llmrun; its workers load the engine of the plain name."""
    bench_peers, _ = peers
    with pytest.raises(SystemExit):
        bench_peers.main(["--before", str(tmp_path), "--engines", "llmrun"])
    with pytest.raises(ValueError, match="unknown engine 'nope'"):
        bench_peers.make_engine("nope" + bench_peers.BEFORE, tmp_path, tmp_path, 1, 8)
