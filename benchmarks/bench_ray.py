"""Batch throughput on Ray: rows/s with 1 and 2 single-thread actors against one single-thread process.

The model is the pythia-70m architecture with random weights and pythia's real tokenizer (as in
``bench_generate.py``; ``--tiny`` for a tiny model, seconds). Every job is the same ``run_batch``
call on the same rows (text, greedy, ``--new-tokens`` each, chunks of ``--chunk-size``): once in
this process with one torch thread, then on a local Ray cluster of 2 CPUs with 1 and 2 actors of
one thread each. Two figures per job:

- **wall**: rows / the job's whole time (actors start and load the model inside it; the cluster
  itself is started before);
- **steady**: rows finished after every actor's first part / the time from then to the end, i.e.
  the throughput once the engines are loaded, which is what a long job sees.

Scaling efficiency at 2 actors = steady rows/s with 2 actors / (2 x with 1 actor); the goal is
>= 0.8. Also against the single process (which has no Ray overhead at all). On a machine shared
with other work the figures are indicative only.

    python benchmarks/bench_ray.py [--rows 96] [--new-tokens 24] [--chunk-size 8] [--json out.json]
    python benchmarks/bench_ray.py --tiny
"""

from __future__ import annotations

import argparse
import json
import os
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


class Clock:
    """Times a job and the moments its parts are saved (``run_batch``'s progress callable)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.parts: list[tuple[float, int]] = []

    def __call__(self, rows: int) -> None:
        self.parts.append((time.perf_counter(), rows))

    def figures(self, warm_parts: int) -> dict[str, float]:
        end = self.parts[-1][0]
        rows = sum(r for _, r in self.parts)
        warm_at = self.parts[warm_parts - 1][0]
        steady_rows = sum(r for _, r in self.parts[warm_parts:])
        return {
            "wall_s": round(end - self.start, 3),
            "wall_rows_per_s": round(rows / (end - self.start), 3),
            "steady_rows_per_s": round(steady_rows / (end - warm_at), 3) if end > warm_at else 0.0,
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=96)
    parser.add_argument("--new-tokens", type=int, default=24)
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
    rows = work / "rows.jsonl"
    rows.write_text(
        "".join(json.dumps({"input": f"{PROMPTS[i % len(PROMPTS)]} ({i})"}) + "\n" for i in range(args.rows))
    )
    common: dict[str, Any] = {
        "chunk_size": args.chunk_size,
        "device": "cpu",
        "generation": {"max_new_tokens": args.new_tokens},
    }

    def job(name: str, warm_parts: int, **options: Any) -> tuple[dict[str, float], list[Any]]:
        clock = Clock()
        out = work / f"{name}.jsonl"
        run_batch(str(folder), rows, out, progress=clock, **common, **options)
        records = [json.loads(line) for line in out.read_text().splitlines()]
        return clock.figures(warm_parts), [r["output"] for r in records]

    results: dict[str, Any] = {"setup": {**described, "rows": args.rows, "new_tokens": args.new_tokens,
                                         "chunk_size": args.chunk_size, "cpus": os.cpu_count()}}  # fmt: skip
    results["process"], expected = job("process", 1)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        results["actors_1"], one = job("actors_1", 1, ray=True, actors=1, threads_per_actor=1)
        results["actors_2"], two = job("actors_2", 2, ray=True, actors=2, threads_per_actor=1)
    finally:
        ray.shutdown()
    steady = {k: results[k]["steady_rows_per_s"] for k in ("process", "actors_1", "actors_2")}
    results["scaling_efficiency_2_actors"] = round(steady["actors_2"] / (2 * steady["actors_1"]), 3)
    results["vs_process_2_actors"] = round(steady["actors_2"] / (2 * steady["process"]), 3)
    results["outputs_equal"] = one == expected and two == expected
    print(json.dumps(results, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
