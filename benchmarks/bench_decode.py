"""Decode speed: llmrun's ``generate_tokens`` against plain transformers ``model.generate``.

Builds the pythia-70m architecture (GPTNeoX: 6 layers, hidden 512, 8 heads, vocab 50,304) with
seeded random weights in float32 (speed does not depend on the weight values), takes the real
GPT-NeoX tokenizer from ``../shared/assets`` when it is there (else random prompt ids), and
measures greedy tokens/s with 64 new tokens at several batch sizes. Both run in this process,
interleaved round by round, so a busy machine slows both alike; the figures are the median and
the best round (on a shared machine the best round is the one least disturbed by other work).

    python benchmarks/bench_decode.py [--batches 1 8 32] [--rounds 3] [--new-tokens 64] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER_JSON = ROOT.parent / "shared" / "assets" / "tokenizers" / "pythia" / "tokenizer.json"


def build_model(seed: int = 0) -> Any:
    """pythia-70m's architecture, random weights, float32, eval mode."""
    from transformers import GPTNeoXForCausalLM

    from llmrun.testing.checkpoints import pythia_70m_config

    torch.manual_seed(seed)
    model = GPTNeoXForCausalLM(pythia_70m_config()).to(torch.float32).eval()
    model.generation_config.eos_token_id = None  # always 64 new tokens, on both paths
    model.generation_config.pad_token_id = 0
    return model


def prompt_ids(batch: int) -> list[list[int]]:
    """Token ids of ``batch`` prompts: the real tokenizer if present, else seeded random ids."""
    from bench_generate import PROMPTS  # the same prompts as the end-to-end benchmark

    texts = [PROMPTS[i % len(PROMPTS)] for i in range(batch)]
    if TOKENIZER_JSON.is_file():
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(TOKENIZER_JSON))
        return [tok.encode(t).ids for t in texts]
    gen = torch.Generator().manual_seed(batch)
    return [torch.randint(1, 50000, (len(t) // 4 + 1,), generator=gen).tolist() for t in texts]


def left_pad(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.zeros((len(rows), width), dtype=torch.long)  # [B, S]
    mask = torch.zeros((len(rows), width), dtype=torch.long)  # [B, S]
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r)
        mask[i, width - len(r) :] = 1
    return ids, mask


def timed(fn: Callable[[], list[list[int]]]) -> tuple[float, list[list[int]]]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--head-dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--compile", action="store_true", help="opt-in torch.compile path (slow first call)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)

    from llmrun.backends.local.decode import generate_tokens, prepare_model_for_decoding
    from llmrun.generation import GenerationConfig

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    n = args.new_tokens
    model = build_model()
    t0 = time.perf_counter()
    head_dtype = None if args.head_dtype == "float32" else getattr(torch, args.head_dtype)
    prepared = prepare_model_for_decoding(model, head_dtype=head_dtype, compile=args.compile)
    prepare_s = time.perf_counter() - t0
    greedy = GenerationConfig(max_new_tokens=n)
    print(
        f"pythia-70m shape, float32, {torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"path={prepared.path}{' compiled' if args.compile else ''}, head={args.head_dtype}, "
        f"prepare {prepare_s:.2f}s, "
        f"tokenizer={'real' if TOKENIZER_JSON.is_file() else 'none (random ids)'}",
        flush=True,
    )

    def plain(ids: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
        with torch.inference_mode():
            out = model.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=n)
        return [row[ids.shape[1] :] for row in out.tolist()]

    def ours(ids: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
        return generate_tokens(prepared, ids, mask, max_new_tokens=n, config=greedy, eos_token_ids=())

    results: list[dict[str, Any]] = []
    for batch in args.batches:
        ids, mask = left_pad(prompt_ids(batch))
        warm, _ = timed(lambda: ours(ids, mask))  # noqa: B023  # warm-up (allocations, kernels, compiling)
        plain(ids[:, -4:], mask[:, -4:])
        if args.compile:
            print(f"batch {batch:>3}: first call (compiles) {warm:.1f}s", flush=True)
        times: dict[str, list[float]] = {"transformers": [], "llmrun": []}
        same = True
        for _ in range(args.rounds):
            t_plain, ref = timed(lambda: plain(ids, mask))  # noqa: B023
            t_ours, got = timed(lambda: ours(ids, mask))  # noqa: B023
            times["transformers"].append(t_plain)
            times["llmrun"].append(t_ours)
            same = same and got == ref
        tokens = batch * n
        plain_tps = tokens / statistics.median(times["transformers"])
        ours_tps = tokens / statistics.median(times["llmrun"])
        plain_best, ours_best = tokens / min(times["transformers"]), tokens / min(times["llmrun"])
        row = {
            "batch": batch,
            "new_tokens": n,
            "transformers_tok_s": round(plain_tps, 1),
            "llmrun_tok_s": round(ours_tps, 1),
            "speedup": round(ours_tps / plain_tps, 2),
            "transformers_best_tok_s": round(plain_best, 1),
            "llmrun_best_tok_s": round(ours_best, 1),
            "best_speedup": round(ours_best / plain_best, 2),
            "greedy_tokens_equal": same,
        }
        results.append(row)
        print(
            f"batch {batch:>3}: transformers {plain_tps:7.1f} tok/s  llmrun {ours_tps:7.1f} tok/s  "
            f"x{ours_tps / plain_tps:4.2f} (median)   best rounds {plain_best:7.1f} / {ours_best:7.1f} "
            f"x{ours_best / plain_best:4.2f}   greedy tokens equal: {same}",
            flush=True,
        )
    if args.json is not None:
        args.json.write_text(json.dumps({"device": "cpu", "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
