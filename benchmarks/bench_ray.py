"""Batch throughput on Ray: rows/s with 1 and 2 single-thread actors against one single-thread process.

The model is the pythia-70m architecture with random weights and pythia's real tokenizer (as in
``bench_generate.py``; ``--tiny`` for a tiny model, seconds). Every job is the same ``run_batch``
call on the same rows (text, greedy, ``--new-tokens`` each, chunks of ``--chunk-size``): once in
this process with one torch thread, then on a local Ray cluster of 2 CPUs with 1 and 2 actors of
one thread each. Two figures per setting:

- **wall**: rows / the whole job's time (actors start and load the model inside it; the cluster
  itself is started before);
- **steady**: the throughput once the engines are loaded, which is what a long job sees,
  measured by difference: the same setting runs a short job (one chunk per actor) and the full
  one, and steady = (full rows - short rows) / (full time - short time), so start-up (actors,
  model load, the first chunk) cancels out. (Timestamps of the parts as the driver saves them
  would not do: Ray Data hands finished blocks over in bursts.)

Scaling efficiency at 2 actors = steady rows/s with 2 actors / (2 x with 1 actor); the goal is
>= 0.8. Also against the single process (which has no Ray overhead at all). On a machine shared
with other work the figures are indicative only.

    python benchmarks/bench_ray.py [--rows 64] [--new-tokens 16] [--chunk-size 8] [--json out.json]
    python benchmarks/bench_ray.py --tiny
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

PROMPTS = (
    "The capital of France is",
    "Once upon a time, in a small village,",
    "def add(a, b):\n    return",
    "Question: What is the highest mountain in the world? Answer:",
)


def ratio(two: float | None, one: float | None) -> float | None:
    """Rows/s of 2 engines over twice that of 1 (1.0 is perfect scaling); None without both."""
    return round(two / (2 * one), 3) if two and one else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--chunk-size", type=int, default=8)
    parser.add_argument("--tiny", action="store_true", help="a tiny model: checks the script runs")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    import ray
    import torch

    from bench_generate import build_benchmark_checkpoint
    from llmrun.batch import run_batch

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="llmrun-bench-ray-"))
    folder = work / "model"
    described = build_benchmark_checkpoint(folder, args.tiny)
    lines = [json.dumps({"input": f"{PROMPTS[i % len(PROMPTS)]} ({i})"}) + "\n" for i in range(args.rows)]
    full = work / "rows.jsonl"
    full.write_text("".join(lines))
    common: dict[str, Any] = {
        "chunk_size": args.chunk_size,
        "device": "cpu",
        "generation": {"max_new_tokens": args.new_tokens},
        "progress": False,
    }

    def timed(name: str, rows: Path, **options: Any) -> tuple[float, list[Any]]:
        out = work / f"{name}.jsonl"
        start = time.perf_counter()
        run_batch(str(folder), rows, out, **common, **options)
        seconds = time.perf_counter() - start
        return seconds, [json.loads(line)["output"] for line in out.read_text().splitlines()]

    def setting(name: str, engines: int, **options: Any) -> tuple[dict[str, float], list[Any]]:
        short_rows = min(args.rows - 1, engines * args.chunk_size)
        short = work / f"{name}-short.jsonl"
        short.write_text("".join(lines[:short_rows]))
        short_s, _ = timed(f"{name}-short-out", short, **options)
        full_s, outputs = timed(f"{name}-out", full, **options)
        figures = {
            "wall_s": round(full_s, 3),
            "wall_rows_per_s": round(args.rows / full_s, 3),
            "short_job_rows": short_rows,
            "short_job_s": round(short_s, 3),
            # None when start-up noise outweighs the extra rows (tiny models): run more rows
            "steady_rows_per_s": (
                round((args.rows - short_rows) / (full_s - short_s), 3) if full_s > short_s * 1.1 else None
            ),
        }
        return figures, outputs

    results: dict[str, Any] = {"setup": {**described, "rows": args.rows, "new_tokens": args.new_tokens,
                                         "chunk_size": args.chunk_size, "cpus": os.cpu_count()}}  # fmt: skip
    results["process"], expected = setting("process", 1)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        results["actors_1"], one = setting("actors_1", 1, ray=True, actors=1, threads_per_actor=1)
        results["actors_2"], two = setting("actors_2", 2, ray=True, actors=2, threads_per_actor=1)
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    steady = {k: results[k]["steady_rows_per_s"] for k in ("process", "actors_1", "actors_2")}
    results["scaling_efficiency_2_actors"] = ratio(steady["actors_2"], steady["actors_1"])
    results["vs_process_2_actors"] = ratio(steady["actors_2"], steady["process"])
    results["outputs_equal"] = one == expected and two == expected
    print(json.dumps(results, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
