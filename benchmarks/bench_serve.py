"""Load test of ``llmrun serve`` on loopback: concurrent clients against the same requests one at a time.

The server is the real command (``python -m llmrun.cli serve``) in its own process, on the
pythia-70m architecture with seeded random weights and pythia's real tokenizer (the checkpoint
of ``bench_generate.py``; a tiny model with ``--tiny``). The clients are aiohttp coroutines in
this process, on the OpenAI completions wire, greedy, ``--new-tokens`` tokens each.

1. **sequential**: the ``--requests`` requests one at a time; their answers are the reference.
2. **concurrent**: the same requests with at most C in flight, for each C of ``--concurrency``
   (default 32 and 64).

Every answer is traced to its request: each prompt carries its request number, each reply must
be 200, echo the model, and hold exactly the text the sequential run gave that prompt (so
nothing is lost, mixed up or changed by batching). Figures: throughput (generated tokens/s and
requests/s), its ratio to the sequential run, p50/p99 latency, and the machine's load average.

    python benchmarks/bench_serve.py [--requests 64] [--new-tokens 32] [--concurrency 32 64] [--json out.json]
    python benchmarks/bench_serve.py --tiny          # a tiny model, seconds: checks the script runs
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_generate  # noqa: E402  (a sibling script: its checkpoint)

DEFAULT_JSON = HERE / "results" / "serve.json"
MODEL = "bench-model"
TOPICS = ("mountains", "rivers", "the moon", "bread", "trains", "music", "gardens", "the sea")


def prompt_of(i: int) -> str:
    return f"Request {i}: write two sentences about {TOPICS[i % len(TOPICS)]}."


def start_server(checkpoint: Path, threads: int, max_batch: int) -> tuple[subprocess.Popen[str], str]:
    """``llmrun serve`` on a free loopback port; returns the process and its URL."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "LLMRUN_CONFIG": ""}
    command = [
        sys.executable, "-m", "llmrun.cli", "serve", str(checkpoint), "--device", "cpu", "--port", "0",
        "--model-name", MODEL, "--max-batch-size", str(max_batch), "--max-queue", "1024",
    ]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    assert proc.stdout is not None
    for line in proc.stdout:
        found = re.search(r"on (http://\S+)", line)
        if found:
            return proc, found.group(1)
    raise RuntimeError(f"the server exited ({proc.wait()}) before saying where it listens")


async def wait_ready(session: Any, url: str) -> None:
    for _ in range(600):
        try:
            async with session.get(url + "/health") as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError("the server never became healthy")


async def one(session: Any, url: str, i: int, new_tokens: int) -> dict[str, Any]:
    body = {"model": MODEL, "prompt": prompt_of(i), "max_tokens": new_tokens, "temperature": 0}
    started = time.perf_counter()
    async with session.post(url + "/v1/completions", json=body) as reply:
        data = await reply.json()
        status = reply.status
    return {"i": i, "status": status, "data": data, "latency": time.perf_counter() - started}


async def run_phase(session: Any, url: str, n: int, new_tokens: int, concurrency: int) -> dict[str, Any]:
    gate = asyncio.Semaphore(concurrency)

    async def gated(i: int) -> dict[str, Any]:
        async with gate:
            return await one(session, url, i, new_tokens)

    started = time.perf_counter()
    results = await asyncio.gather(*(gated(i) for i in range(n)), return_exceptions=True)
    wall = time.perf_counter() - started
    good = [r for r in results if isinstance(r, dict) and r["status"] == 200]
    tokens = sum(r["data"]["usage"]["completion_tokens"] for r in good)
    latencies = sorted(r["latency"] for r in good)
    return {
        "concurrency": concurrency,
        "wall_s": round(wall, 3),
        "ok": len(good),
        "lost": n - len(good),
        "tokens": tokens,
        "tokens_per_s": round(tokens / wall, 1),
        "requests_per_s": round(len(good) / wall, 2),
        "p50_latency_s": round(statistics.median(latencies), 3) if latencies else None,
        "p99_latency_s": round(latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 3)
        if latencies
        else None,
        "_results": results,
    }


def trace(phase: dict[str, Any], reference: dict[int, str]) -> dict[str, int]:
    """Check every answer against its request: status, model, and the sequential run's text."""
    by_request: dict[int, dict[str, Any]] = {}
    for r in phase.pop("_results"):
        if isinstance(r, dict):
            by_request[r["i"]] = r
    differ = wrong_model = 0
    for i, text in reference.items():
        r = by_request.get(i)
        if r is None or r["status"] != 200:
            continue
        if r["data"]["model"] != MODEL:
            wrong_model += 1
        if r["data"]["choices"][0]["text"] != text:
            differ += 1
    ids = {r["data"].get("id") for r in by_request.values() if r["status"] == 200}
    return {
        "differ_from_sequential": differ,
        "wrong_model": wrong_model,
        "duplicate_ids": len(by_request) - len(ids),
    }


async def bench(url: str, args: argparse.Namespace) -> dict[str, Any]:
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=600)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        await wait_ready(session, url)
        await run_phase(session, url, 4, args.new_tokens, 4)  # warm-up
        sequential = await run_phase(session, url, args.requests, args.new_tokens, 1)
        reference = {
            r["i"]: r["data"]["choices"][0]["text"]
            for r in sequential["_results"]
            if isinstance(r, dict) and r["status"] == 200
        }
        sequential.update(trace(sequential, reference))
        phases = [sequential]
        for c in args.concurrency:
            phase = await run_phase(session, url, args.requests, args.new_tokens, c)
            phase.update(trace(phase, reference))
            phase["speedup_vs_sequential"] = round(phase["tokens_per_s"] / sequential["tokens_per_s"], 2)
            phases.append(phase)
        async with session.get(url + "/metrics") as reply:
            metrics = await reply.text()
    running = [
        line for line in metrics.splitlines() if line.startswith("llmrun_serve_generated_tokens_total")
    ]
    return {"phases": phases, "server_generated_tokens": running}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=64, help="requests per phase (default 64)")
    parser.add_argument("--new-tokens", type=int, default=32, help="tokens per answer (default 32)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[32, 64], help="default: 32 64")
    parser.add_argument("--threads", type=int, default=1, help="the server's torch threads (default 1)")
    parser.add_argument(
        "--tokenizer", type=Path, help=f"pythia's tokenizer.json (default {bench_generate.PYTHIA_TOKENIZER})"
    )
    parser.add_argument("--tiny", action="store_true", help="a tiny model (checks the script runs)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"default {DEFAULT_JSON}")
    args = parser.parse_args(argv)
    if args.tokenizer is not None:
        if not args.tokenizer.is_file():
            parser.error(f"--tokenizer: no such file: {args.tokenizer}")
        bench_generate.PYTHIA_TOKENIZER = args.tokenizer
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="llmrun-bench-serve-") as tmp:
        checkpoint = Path(tmp) / "model"
        described = bench_generate.build_benchmark_checkpoint(checkpoint, args.tiny)
        proc, url = start_server(checkpoint, args.threads, max(args.concurrency))
        try:
            report = asyncio.run(bench(url, args))
        finally:
            proc.terminate()
            proc.wait(60)
    report.update(
        {
            "checkpoint": described,
            "new_tokens": args.new_tokens,
            "requests": args.requests,
            "server_threads": args.threads,
            "cpus": os.cpu_count(),
            "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        }
    )
    print(
        f"{'concurrency':>11} {'tokens/s':>9} {'req/s':>7} {'x seq':>6} {'p50 s':>7} {'p99 s':>7} lost differ"
    )
    for p in report["phases"]:
        print(
            f"{p['concurrency']:>11} {p['tokens_per_s']:>9} {p['requests_per_s']:>7} "
            f"{p.get('speedup_vs_sequential', 1.0):>6} {p['p50_latency_s']:>7} {p['p99_latency_s']:>7} "
            f"{p['lost']:>4} {p['differ_from_sequential']:>6}"
        )
    print(
        f"load average (1 min) before/after: {report['load_average_before_after']} on {os.cpu_count()} CPUs"
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    failed = any(p["lost"] or p["wrong_model"] or p["duplicate_ids"] for p in report["phases"])
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
