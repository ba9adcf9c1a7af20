"""The benchmark scripts run, on tiny models on the CPU, and write the figures they promise.

No timing thresholds here: speed is for the benchmarks themselves. These tests check that each
script runs end to end (so it cannot rot) and that its JSON has every figure, positive.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def run_script(name: str, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / name), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    assert done.returncode == 0, f"{name} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"llmrun_benchmarks_{name}", BENCHMARKS / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def positive(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


# ----------------------------------------------------------------------------- gpu.py


def test_gpu_script_runs_tiny_on_cpu(tmp_path: Path) -> None:
    """gpu.py --tiny runs the CUDA check's code on the CPU (tiny Llama, float32) in seconds."""
    out = tmp_path / "gpu.json"
    run_script("gpu.py", "--tiny", "--bandwidth-gbs", "20", "--json", str(out))
    result = json.loads(out.read_text())
    assert result["device"]["type"] == "cpu"
    assert result["device"]["bandwidth_gbs"] == 20
    model = result["model"]
    assert model["dtype"] == "float32"
    assert model["llmrun_decode_path"] == "llama"  # the native forward, as on the GPU
    assert positive(model["parameters"])
    assert positive(model["bytes_per_step"])
    assert positive(result["bandwidth_limit_tok_s_batch1"])
    assert [row["batch"] for row in result["results"]] == [1, 4]
    for row in result["results"]:
        assert "skipped" not in row
        for path in ("transformers", "llmrun"):
            assert positive(row[path]["tok_s"]), (row["batch"], path)
            assert len(row[path]["runs_s"]) == 1
        assert positive(row["llmrun"]["ratio"])
        # float32: the decode loop picks plain generate's greedy tokens, so both did the same work
        assert row["llmrun"]["greedy_rows_equal_transformers"] == f"{row['batch']}/{row['batch']}"
        typed = row["llmrun_typed"]  # the grammar-constrained path: every row closes valid JSON
        assert typed["rows_valid_json"] == f"{row['batch']}/{row['batch']}"
        assert positive(typed["tok_s"])
        assert typed["mask_device"] == "cpu"
    assert result["settings"]["typed_batches"] == [1, 4]
    pct = result["batch1_pct_of_bandwidth_limit"]
    assert set(pct) == {"transformers", "llmrun"}
    assert all(positive(v) for v in pct.values())


def test_gpu_bandwidth_limits_match_the_issue() -> None:
    """Llama-2-7b in bfloat16 reads 13.2 GB per step: about 254 tok/s on an H100 SXM, 363 on an H200."""
    import torch
    from transformers import AutoModelForCausalLM

    gpu = load_script("gpu")
    llama = gpu.llama2_7b_config()
    assert (llama.num_hidden_layers, llama.hidden_size, llama.num_attention_heads) == (32, 4096, 32)
    assert (llama.intermediate_size, llama.vocab_size, llama.max_position_embeddings) == (11008, 32000, 4096)
    with torch.device("meta"):  # shapes only, no memory
        model = AutoModelForCausalLM.from_config(llama, dtype=torch.bfloat16)
    step_bytes = gpu.bytes_per_step(model)
    assert step_bytes == (6_738_415_616 - 32_000 * 4096) * 2  # every weight but the input embedding
    h100, h200 = gpu.bandwidth_for("NVIDIA H100 80GB HBM3"), gpu.bandwidth_for("NVIDIA H200")
    assert round(h100 * 1e9 / step_bytes) == 254
    assert round(h200 * 1e9 / step_bytes) == 363
    assert gpu.bandwidth_for("NVIDIA H100 PCIe") == 2000
    assert gpu.bandwidth_for("Some Future GPU") is None


# ----------------------------------------------------------------------------- run_all.py


@pytest.mark.slow
def test_run_all_tiny_writes_json_table_and_plot(tmp_path: Path) -> None:
    """run_all.py --tiny runs bench_generate.py on a tiny checkpoint: every measurement, ~20-40 s."""
    done = run_script("run_all.py", "--tiny", "--results-dir", str(tmp_path))
    assert "tokens/s, batch 1" in done.stdout  # the table of ratios
    bench = json.loads((tmp_path / "bench.json").read_text())
    assert (tmp_path / "generate.json").is_file()
    assert (tmp_path / "tokens_per_s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    generate = bench["generate"]
    assert "error" not in generate
    assert generate["model"]["llmrun_decode_path"] == "gpt_neox"
    throughput = generate["throughput"]
    assert [row["batch"] for row in throughput] == [1, 4]
    for row in throughput:
        for key in ("tokens", "transformers_tok_s", "llmrun_tok_s", "ratio", "int8_tok_s", "int8_ratio"):
            assert positive(row[key]), (row["batch"], key)
        assert row["greedy_texts_equal"] is True  # both paths generated the same text
    int8 = generate["int8_numerics"]
    assert 0.0 <= int8["top1_agreement_teacher_forced"] <= 1.0
    assert 0.0 < int8["max_logit_error_of_scale_median"] <= int8["max_logit_error_of_scale_worst"] < 0.5

    typed = generate["typed"]
    assert [row["batch"] for row in typed] == [1, 4]
    for row in typed:
        assert row["all_valid"] is True
        assert positive(row["typed_tokens"])
        assert positive(row["untyped_tokens"])
        assert positive(row["decode_steps"])
        assert positive(row["typed_ms_per_token"])
        assert positive(row["untyped_ms_per_token"])
        assert isinstance(row["overhead_per_token_pct"], float | int)
        assert isinstance(row["overhead_vs_full_length_rows_pct"], float | int)

    compile_ = generate["grammar_compile"]
    for key in ("tokenizer_setup_s", "first_compile_s", "first_typed_call_overhead_s", "cached_s"):
        assert positive(compile_[key]), key

    ttft = generate["ttft"]
    assert positive(ttft["transformers_ms"])
    assert positive(ttft["llmrun_ms"])
    assert positive(ttft["prompt_tokens"])

    memory = generate["memory"]
    for path in ("transformers", "llmrun"):
        assert positive(memory[path]["delta_mib"]), path
        assert memory[path]["peak_mib"] >= memory[path]["rss_after_imports_mib"]

    summary = bench["summary"]
    for key in ("generate_ratio_batch1", "generate_ratio_batch4", "typed_overhead_pct_batch1"):
        assert key in summary
    assert bench["goals"] == []  # a tiny model is not measured against the goals


def test_goals_compare_figures_with_their_targets() -> None:
    run_all = load_script("run_all")
    checks = {
        c["figure"]: c["met"]
        for c in run_all.goals(
            {"generate_ratio_batch1": 3.2, "generate_ratio_batch32": 1.9, "typed_overhead_pct_batch16": 10.0}
        )
    }
    assert checks == {
        "generate_ratio_batch1": True,
        "generate_ratio_batch32": False,
        "typed_overhead_pct_batch16": True,
    }
