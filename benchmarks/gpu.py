"""The CUDA check: Llama-2-7b-shaped decode speed, llmrun's decode loop against plain transformers.

Builds the Llama-2-7b architecture (32 layers, hidden 4096, 32 heads, intermediate 11,008, vocab
32,000) with random weights directly on the device in bfloat16 (nothing is downloaded, nothing is
materialized on the CPU first), takes Llama 2's real tokenizer from ``../shared/assets`` when it
is there (else random prompt ids), and measures greedy decoding with 64 new tokens at batch 1, 8,
32 and 64:

- ``transformers``: plain ``model.generate(do_sample=False)`` on the left-padded batch;
- ``llmrun``: what ``LocalRunner`` runs: ``prepare_model_for_decoding(model)`` (done once, at load
  time) and ``generate_tokens`` with the runner's own untyped constraint;
- ``llmrun_compiled``: the same with ``prepare_model_for_decoding(model, compile=MODE)`` (static
  KV cache + ``torch.compile`` of the decode step; opt-in, compiles per batch size), at the
  ``--compile-batches`` (default: batch 1 on CUDA, none on the CPU); ``--compile-mode``
  (default on CUDA: ``reduce-overhead``, i.e. CUDA graphs; torch falls back to plain compiled
  kernels, and logs why, where it cannot capture a graph);
- ``llmrun_typed``: typed decoding, the runner's JSON-Schema constraint (xgrammar) on the same
  prepared model, the token mask applied on the logits' device (on CUDA: xgrammar's GPU kernel),
  at ``--typed-batches`` (default: 1 and 32; ``--tiny``: 1 and 4), budget 192 tokens: tokens/s,
  rows that parse as JSON, and the cost per token against the untyped path of the same batch.
  Typed rows stop when their JSON closes, so the counts differ from the untyped rows'.

EOS is disabled, so every row makes exactly ``--new-tokens`` tokens. Paths are interleaved round
by round; figures are medians. At batch 1 each path is also given as a share of the
memory-bandwidth limit: HBM bandwidth / bytes read per step (every weight but the input
embedding): about 254 tok/s on an H100 SXM and 363 on an H200 for Llama-2-7b in bfloat16. The
bandwidth comes from ``--bandwidth-gbs`` or a table of known GPUs. Peak memory per path is
``torch.cuda.max_memory_allocated`` above the weights (CPU: peak RSS, approximate).

``--tiny`` runs the same code on the CPU with a tiny Llama config in float32 (seconds): the test
suite runs it, so this script cannot rot. Only the device, dtype and config size differ.

    python benchmarks/gpu.py                          # on a CUDA machine, < 8 minutes
    python benchmarks/gpu.py --tiny --bandwidth-gbs 20
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
LLAMA_TOKENIZER = HERE.parent.parent / "shared" / "assets" / "tokenizers" / "llama2" / "tokenizer.model"
DEFAULT_JSON = HERE / "results" / "gpu.json"

#: Peak memory bandwidth (GB/s) by a fragment of ``torch.cuda.get_device_name()``; first match wins.
BANDWIDTH_GBS: list[tuple[str, float]] = [
    ("H200", 4800.0),
    ("H100 NVL", 3900.0),
    ("H100 PCIe", 2000.0),
    ("H100", 3350.0),  # SXM5 ("NVIDIA H100 80GB HBM3")
    ("A100-SXM4-80GB", 2039.0),
    ("A100 80GB PCIe", 1935.0),
    ("A100", 1555.0),  # the 40 GB parts
    ("L40S", 864.0),
    ("A10G", 600.0),
    ("A10", 600.0),
    ("L4", 300.0),
    ("RTX 4090", 1008.0),
]

PROMPTS = [
    "Question: What is the highest mountain in the world? Answer:",
    "Question: Who wrote the play Hamlet? Answer:",
    "The quick brown fox jumps over the lazy dog. Then it",
    "Question: What is the capital of France, and what is it famous for? Answer:",
    "Once upon a time, in a small village by the sea,",
    "Question: How many days are there in a leap year? Answer:",
    "A language model predicts the next word in a sequence of text. It is trained on",
    "def add(a, b):\n    return",
]


@dataclass(frozen=True)
class Settings:
    device: torch.device
    dtype: torch.dtype
    tiny: bool
    batches: list[int]
    compile_batches: list[int]
    new_tokens: int
    rounds: int
    deadline_s: float
    bandwidth_gbs: float | None
    compile_mode: str = "default"
    typed_batches: tuple[int, ...] = ()


# ----------------------------------------------------------------------------- model and inputs


def llama2_7b_config() -> Any:
    """The config of meta-llama/Llama-2-7b-hf (32 layers, hidden 4096, vocab 32,000, float16)."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=32000,
        hidden_size=4096,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        intermediate_size=11008,
        hidden_act="silu",
        max_position_embeddings=4096,
        initializer_range=0.02,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        dtype="float16",
    )


def build_model(s: Settings) -> tuple[Any, Any, str]:
    """The model (random weights, built on ``s.device`` in ``s.dtype``), its tokenizer or None, a name."""
    from transformers import AutoModelForCausalLM

    from llmrun.testing.checkpoints import (
        load_llama2_tokenizer,
        padded_vocab_size,
        tiny_config,
        train_sentencepiece_style_tokenizer,
    )

    tokenizer: Any = None
    if s.tiny:
        tokenizer = train_sentencepiece_style_tokenizer()
        config = tiny_config(
            "llama",
            padded_vocab_size(len(tokenizer)),
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        name = "tiny Llama (2 layers, hidden 64, GQA 4/2)"
    else:
        config = llama2_7b_config()
        if LLAMA_TOKENIZER.is_file():
            tokenizer = load_llama2_tokenizer(LLAMA_TOKENIZER)
        name = "Llama-2-7b architecture (32 layers, hidden 4096, vocab 32,000)"
    config.dtype = s.dtype
    torch.manual_seed(0)
    with torch.device(s.device):  # parameters are created (and initialized) on the device itself
        model = AutoModelForCausalLM.from_config(config, dtype=s.dtype)
    model.eval()
    model.generation_config.eos_token_id = None  # every row makes exactly new_tokens tokens
    if tokenizer is not None and len(tokenizer) < config.vocab_size:
        with torch.no_grad():  # ids past the tokenizer never win (as with trained weights)
            model.get_output_embeddings().weight[len(tokenizer) :] = 0
    return model, tokenizer, name


def make_batch(
    tokenizer: Any, batch: int, vocab: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ``input_ids`` and ``attention_mask`` ``[B, S]`` of ``batch`` prompts."""
    texts = [PROMPTS[i % len(PROMPTS)] for i in range(batch)]
    if tokenizer is None:
        gen = torch.Generator().manual_seed(batch)
        ids = torch.randint(3, vocab, (batch, 24), generator=gen)
        return ids.to(device), torch.ones_like(ids, device=device)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    enc = tokenizer(texts, return_tensors="pt", padding=True)
    return enc["input_ids"].to(device), enc["attention_mask"].to(device)


def bytes_per_step(model: Any) -> int:
    """Bytes of weights read per decode step: every parameter but the input embedding (gathered
    row by row); a tied embedding is the LM head too, so it counts."""
    embed = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    return sum(
        p.numel() * p.element_size()
        for p in model.parameters()  # shared parameters come once
        if p is not embed or p is head
    )


def bandwidth_for(device_name: str) -> float | None:
    """Peak memory bandwidth (GB/s) of a GPU by its ``torch.cuda.get_device_name``; None if unknown."""
    for fragment, gbs in BANDWIDTH_GBS:
        if fragment in device_name:
            return gbs
    return None


def device_bandwidth(s: Settings) -> tuple[float | None, str]:
    """The bandwidth to use and where it came from."""
    if s.bandwidth_gbs is not None:
        return s.bandwidth_gbs, "--bandwidth-gbs"
    if s.device.type != "cuda":
        return None, "unknown (pass --bandwidth-gbs)"
    name = torch.cuda.get_device_name(s.device)
    found = bandwidth_for(name)
    return (found, "table") if found else (None, f"unknown for {name!r} (pass --bandwidth-gbs)")


# ----------------------------------------------------------------------------- timing and memory


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PeakMemory:
    """Peak memory of one call above what was allocated before it: CUDA allocator stats, or on the
    CPU Linux's peak RSS (``VmHWM``, reset through ``/proc/self/clear_refs``; approximate, since
    freed memory the allocator keeps is reused)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.base = 0.0

    @staticmethod
    def _status(field: str) -> float:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 2**10
        return float("nan")

    def current_mib(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.memory_allocated(self.device) / 2**20
        return self._status("VmRSS") if platform.system() == "Linux" else float("nan")

    def start(self) -> None:
        sync(self.device)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        elif platform.system() == "Linux":
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")
            except OSError:
                pass
        self.base = self.current_mib()

    def peak_mib(self) -> float:
        sync(self.device)
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20 - self.base
        return self._status("VmHWM") - self.base if platform.system() == "Linux" else float("nan")


def timed(fn: Callable[[], list[list[int]]], device: torch.device) -> tuple[float, list[list[int]]]:
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - start, out


# ----------------------------------------------------------------------------- the paths


def transformers_path(
    model: Any, pad_id: int, n: int
) -> Callable[[torch.Tensor, torch.Tensor], list[list[int]]]:
    def run(ids: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
        out = model.generate(
            input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=n, pad_token_id=pad_id
        )
        new: list[list[int]] = out[:, ids.shape[1] :].tolist()
        return new

    return run


def llmrun_path(
    prepared: Any, real_vocab: int, n: int
) -> Callable[[torch.Tensor, torch.Tensor], list[list[int]]]:
    """``LocalRunner``'s untyped call, minus tokenizing: its vocabulary limit, greedy, no EOS."""
    from llmrun.backends.local.decode import generate_tokens
    from llmrun.generation import GenerationConfig

    config = GenerationConfig(max_new_tokens=n)

    def run(ids: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
        return generate_tokens(
            prepared,
            ids,
            mask,
            max_new_tokens=n,
            config=config,
            eos_token_ids=(),
            vocab_size=real_vocab,
        )

    return run


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.end = time.perf_counter() + seconds

    def left(self) -> float:
        return self.end - time.perf_counter()


Run = Callable[[torch.Tensor, torch.Tensor], list[list[int]]]


#: The typed path's output: the shape of a small typed answer (string, bounded number, enum, list).
TYPED_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "answer": {"type": "string", "description": "a short answer"},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "kind": {"enum": ["fact", "opinion", "unknown", "other"]},
        "sources": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["answer", "confidence", "kind", "sources"],
    "additionalProperties": False,
}


#: The typed path's token budget: the schema's worst case must fit (strings are bounded to it).
TYPED_BUDGET = 192


def typed_path(prepared: Any, tokenizer: Any, vocab: int, n: int = TYPED_BUDGET) -> Run:
    """Typed decoding as ``LocalRunner`` does it: one JSON-Schema constraint per call, greedy."""
    from llmrun.backends.local.decode import generate_tokens
    from llmrun.backends.local.grammar import json_constraint
    from llmrun.generation import GenerationConfig

    config = GenerationConfig(max_new_tokens=n)

    def run(ids: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
        constraint = json_constraint(tokenizer, TYPED_SCHEMA, ids.shape[0], vocab, max_new_tokens=n)
        return generate_tokens(
            prepared, ids, mask, max_new_tokens=n, config=config, eos_token_ids=(), constraint=constraint
        )

    return run


def time_typed(
    run: Run, tokenizer: Any, ids: torch.Tensor, mask: torch.Tensor, rounds: int, device: torch.device
) -> dict[str, Any]:
    """The typed path on one batch: a warm-up (compiles the grammar), then ``rounds`` timed calls."""
    out = run(ids, mask)
    times = [timed(lambda: run(ids, mask), device)[0] for _ in range(rounds)]
    produced = sum(len(r) for r in out)
    valid = 0
    for row in out:
        try:
            json.loads(tokenizer.decode(row, skip_special_tokens=True))
            valid += 1
        except ValueError:
            pass
    return {
        "tok_s": round(produced / statistics.median(times), 1),
        "tokens": produced,
        "runs_s": [round(t, 4) for t in times],
        "rows_valid_json": f"{valid}/{len(out)}",
        "mask_device": str(device),
    }


def first_compiled_call(
    run: Run, ids: torch.Tensor, mask: torch.Tensor, memory: PeakMemory
) -> dict[str, Any]:
    """The compiled path's first call at this shape (compiles it); an error is recorded, not raised."""
    memory.start()
    try:
        first_s, _ = timed(lambda: run(ids, mask), memory.device)
    except Exception as exc:  # torch.compile failures (missing compiler, unsupported op): report them
        return {"error": f"{type(exc).__name__}: {str(exc)[:500]}"}
    return {"first_call_s": round(first_s, 2), "first_call_peak_mib": round(memory.peak_mib(), 1)}


def time_batch(
    paths: dict[str, Run], ids: torch.Tensor, mask: torch.Tensor, rounds: int, memory: PeakMemory
) -> dict[str, Any]:
    """Every path on one batch: a warm-up (which also gives its peak memory), then interleaved rounds."""
    batch, n_tokens = ids.shape[0], None
    row: dict[str, Any] = {}
    outputs: dict[str, list[list[int]]] = {}
    for name, run in paths.items():
        memory.start()
        outputs[name] = run(ids, mask)
        row[name] = {"peak_mib": round(memory.peak_mib(), 1)}
        n_tokens = sum(len(r) for r in outputs[name])
    runs: dict[str, list[float]] = {name: [] for name in paths}
    order = list(paths.items())
    for r in range(rounds):
        for name, run in order if r % 2 == 0 else order[::-1]:
            runs[name].append(timed(lambda run=run: run(ids, mask), memory.device)[0])
    for name, times in runs.items():
        row[name]["tok_s"] = round((n_tokens or 0) / statistics.median(times), 1)
        row[name]["runs_s"] = [round(t, 4) for t in times]
        if name != "transformers":
            same = sum(a == c for a, c in zip(outputs[name], outputs["transformers"], strict=True))
            row[name]["greedy_rows_equal_transformers"] = f"{same}/{batch}"
            row[name]["ratio"] = round(row[name]["tok_s"] / row["transformers"]["tok_s"], 2)
    return row


def measure(s: Settings, model: Any, tokenizer: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """All paths at every batch size; returns per-batch rows and facts about the prepared paths."""
    from llmrun.backends.local.decode import prepare_model_for_decoding

    deadline = Deadline(s.deadline_s)
    memory = PeakMemory(s.device)
    vocab = int(model.config.vocab_size)
    real_vocab = len(tokenizer) if tokenizer is not None else vocab
    pad_id = (
        int(tokenizer.pad_token_id) if tokenizer is not None and tokenizer.pad_token_id is not None else 0
    )
    n = s.new_tokens

    before = memory.current_mib()
    t0 = time.perf_counter()
    prepared = prepare_model_for_decoding(model)
    facts: dict[str, Any] = {
        "llmrun_prepare_s": round(time.perf_counter() - t0, 2),
        "llmrun_prepare_extra_mib": round(memory.current_mib() - before, 1),
        "llmrun_decode_path": prepared.path,
    }
    paths: dict[str, Run] = {
        "transformers": transformers_path(model, pad_id, n),
        "llmrun": llmrun_path(prepared, real_vocab, n),
    }
    compiled_run = None
    if s.compile_batches:
        compile_arg: bool | str = True if s.compile_mode == "default" else s.compile_mode
        compiled_run = llmrun_path(prepare_model_for_decoding(model, compile=compile_arg), real_vocab, n)
        facts["compile_mode"] = s.compile_mode
    typed_run = typed_path(prepared, tokenizer, vocab) if tokenizer is not None else None
    if typed_run is None and s.typed_batches:
        facts["llmrun_typed"] = "skipped: no tokenizer (the typed path needs one)"

    rows: list[dict[str, Any]] = []
    for b in s.batches:
        ids, mask = make_batch(tokenizer, b, vocab, s.device)
        row: dict[str, Any] = {"batch": b, "prompt_tokens": int(ids.shape[1]), "new_tokens": n}
        rows.append(row)
        if deadline.left() < 30:
            row["skipped"] = "time budget (--deadline-s) spent"
            continue
        active = dict(paths)
        compiled: dict[str, Any] = {}
        if compiled_run is not None and b in s.compile_batches:
            if deadline.left() < 150:
                compiled = {"skipped": "time budget (--deadline-s) too short to compile"}
            else:
                compiled = first_compiled_call(compiled_run, ids, mask, memory)
                if "error" not in compiled:
                    active["llmrun_compiled"] = compiled_run
        row.update(time_batch(active, ids, mask, s.rounds, memory))
        if compiled:
            row["llmrun_compiled"] = {**compiled, **row.get("llmrun_compiled", {})}
        if typed_run is not None and b in s.typed_batches:
            if deadline.left() < 60:
                row["llmrun_typed"] = {"skipped": "time budget (--deadline-s) spent"}
            else:
                typed = time_typed(typed_run, tokenizer, ids, mask, s.rounds, s.device)
                per_token = 1 / typed["tok_s"] - 1 / row["llmrun"]["tok_s"]
                typed["cost_per_token_vs_untyped_pct"] = round(100 * per_token * row["llmrun"]["tok_s"], 1)
                typed["ratio"] = round(typed["tok_s"] / row["transformers"]["tok_s"], 2)
                row["llmrun_typed"] = typed
                valid = typed["rows_valid_json"]
                print(f"batch {b:>3}: llmrun_typed {typed['tok_s']:9.1f} tok/s, {valid} rows valid JSON")
        print(
            f"batch {b:>3}: "
            + "   ".join(f"{name} {row[name]['tok_s']:9.1f} tok/s" for name in active)
            + "".join(f"   {name} x{row[name]['ratio']:.2f}" for name in active if name != "transformers"),
            flush=True,
        )
    return rows, facts


# ----------------------------------------------------------------------------- main


def parse_settings(argv: list[str] | None) -> tuple[Settings, Path]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny Llama config, float32 on the CPU (seconds)")
    parser.add_argument("--device", default=None, help="default: cuda when available (never with --tiny)")
    parser.add_argument("--dtype", default=None, choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--batches", type=int, nargs="+", default=None, help="default: 1 8 32 64")
    parser.add_argument(
        "--compile-batches",
        type=int,
        nargs="*",
        default=None,
        help="batches also timed with compile=True (default: 1 on CUDA, none on the CPU)",
    )
    parser.add_argument(
        "--compile-mode",
        default=None,
        choices=["default", "reduce-overhead", "max-autotune"],
        help="torch.compile mode of the compiled path (default: reduce-overhead on CUDA, else default)",
    )
    parser.add_argument(
        "--typed-batches",
        type=int,
        nargs="*",
        default=None,
        help="typed path batches (default: 1 32; tiny: 1 4)",
    )
    parser.add_argument("--new-tokens", type=int, default=None, help="default: 64 (--tiny: 16)")
    parser.add_argument("--rounds", type=int, default=None, help="default: 3 (--tiny: 1)")
    parser.add_argument("--deadline-s", type=float, default=420.0, help="skip what would start later")
    parser.add_argument("--bandwidth-gbs", type=float, default=None, help="memory bandwidth, GB/s")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (--tiny: 1)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"default: {DEFAULT_JSON}")
    args = parser.parse_args(argv)
    if not args.tiny and args.device is None and not torch.cuda.is_available():
        parser.error(
            "no CUDA device here: the Llama-2-7b shape needs a GPU (27 GB in float32 on a CPU); "
            "use --tiny for the CPU check, or --device cpu to build it on the CPU anyway"
        )
    device = torch.device(args.device or ("cpu" if args.tiny else "cuda"))
    dtype_name = args.dtype or ("bfloat16" if device.type == "cuda" else "float32")
    threads = args.threads if args.threads is not None else 1 if args.tiny else None
    if threads is not None:
        torch.set_num_threads(threads)
    settings = Settings(
        device=device,
        dtype=getattr(torch, dtype_name),
        tiny=args.tiny,
        batches=args.batches or ([1, 4] if args.tiny else [1, 8, 32, 64]),
        compile_batches=(
            args.compile_batches if args.compile_batches is not None else [1] if device.type == "cuda" else []
        ),
        new_tokens=args.new_tokens or (16 if args.tiny else 64),
        rounds=args.rounds or (1 if args.tiny else 3),
        deadline_s=args.deadline_s,
        bandwidth_gbs=args.bandwidth_gbs,
        compile_mode=args.compile_mode or ("reduce-overhead" if device.type == "cuda" else "default"),
        typed_batches=tuple(
            args.typed_batches if args.typed_batches is not None else [1, 4] if args.tiny else [1, 32]
        ),
    )
    return settings, args.json


def main(argv: list[str] | None = None) -> int:
    s, json_path = parse_settings(argv)
    started = time.perf_counter()
    model, tokenizer, name = build_model(s)
    build_s = time.perf_counter() - started
    device_name = torch.cuda.get_device_name(s.device) if s.device.type == "cuda" else platform.processor()
    bandwidth, source = device_bandwidth(s)
    step_bytes = bytes_per_step(model)
    limit = bandwidth * 1e9 / step_bytes if bandwidth else None
    print(
        f"{name}, {str(s.dtype).removeprefix('torch.')} on {s.device} ({device_name or platform.machine()}), "
        f"built in {build_s:.1f} s; {step_bytes / 1e9:.2f} GB read per step; "
        f"bandwidth {bandwidth or '?'} GB/s ({source}); batch-1 limit "
        + (f"{limit:.0f} tok/s" if limit else "unknown"),
        flush=True,
    )
    rows, facts = measure(s, model, tokenizer)
    result: dict[str, Any] = {
        "benchmark": "gpu",
        "device": {
            "type": s.device.type,
            "name": device_name,
            "bandwidth_gbs": bandwidth,
            "bandwidth_source": source,
            "torch": torch.__version__,
            "cpu_threads": torch.get_num_threads(),
        },
        "model": {
            "name": name,
            "dtype": str(s.dtype).removeprefix("torch."),
            "parameters": sum(p.numel() for p in model.parameters()),
            "bytes_per_step": step_bytes,
            "tokenizer": "Llama 2 SentencePiece"
            if tokenizer is not None and not s.tiny
            else "trained SentencePiece-style"
            if tokenizer is not None
            else "none (random ids)",
            "build_s": round(build_s, 1),
            **facts,
        },
        "settings": {
            "batches": s.batches,
            "compile_batches": s.compile_batches,
            "compile_mode": s.compile_mode,
            "typed_batches": list(s.typed_batches),
            "new_tokens": s.new_tokens,
            "rounds": s.rounds,
            "statistic": "median of rounds",
        },
        "bandwidth_limit_tok_s_batch1": round(limit, 1) if limit else None,
        "results": rows,
    }
    first = next((row for row in rows if row["batch"] == 1 and "skipped" not in row), None)
    if limit and first is not None:
        result["batch1_pct_of_bandwidth_limit"] = {
            name: round(100 * first[name]["tok_s"] / limit, 1)
            for name in ("transformers", "llmrun", "llmrun_compiled")
            if "tok_s" in first.get(name, {})
        }
        print(
            "batch 1, % of the bandwidth limit: "
            + ", ".join(f"{k} {v:.1f}%" for k, v in result["batch1_pct_of_bandwidth_limit"].items()),
            flush=True,
        )
    result["elapsed_s"] = round(time.perf_counter() - started, 1)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {json_path} ({result['elapsed_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
