"""``llmrun batch``: the command-line face of :func:`llmrun.batch.run_batch`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

__all__ = ["add_batch_command", "run_batch_command"]

_EPILOG = """examples:
  llmrun batch EleutherAI/pythia-70m rows.jsonl --output out.parquet --input-key question
  llmrun batch EleutherAI/pythia-70m rows.jsonl --output out.parquet --output-type app:Answer --ray
  llmrun batch EleutherAI/pythia-70m rows.csv --output out.jsonl --ray 10.0.0.5:6379 --resume
the output holds one row per input row, in order: index, output (or error), finish_reason, tokens."""


def add_batch_command(commands: Any) -> None:
    """Add the ``batch`` subcommand to the ``llmrun`` parser's subcommands."""
    batch = commands.add_parser(
        "batch",
        help="generate for every row of a JSON-lines, CSV or Parquet file (resumable; Ray optional)",
        description="Generate one output per row of INPUT into --output, in one process or on Ray.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    batch.add_argument("model", help="hub id, local checkpoint folder, or a remote model name")
    batch.add_argument("input", type=Path, help="rows: .jsonl (one object per line), .csv or .parquet")
    batch.add_argument(
        "--output", "-o", type=Path, required=True, help="where results go: .parquet or .jsonl"
    )
    batch.add_argument(
        "--output-type", metavar="MODULE:CLASS", help="a llmrun.Type to answer in, e.g. app:Answer"
    )
    batch.add_argument("--input-type", metavar="MODULE:CLASS", help="validate each row into this llmrun.Type")
    batch.add_argument("--input-key", default="input", help="field holding the prompt (default: input)")
    batch.add_argument("--backend", help="local (default), lamini, fake, or an installed plugin")
    batch.add_argument("--device", help="local backend: auto (default), cpu, cuda, cuda:N")
    batch.add_argument("--dtype", help="local backend: auto (default), float32, bfloat16, float16")
    again = batch.add_mutually_exclusive_group()
    again.add_argument("--overwrite", action="store_true", help="replace an existing output")
    again.add_argument(
        "--resume", action="store_true", help="finish an interrupted job, keeping its done rows"
    )
    batch.add_argument(
        "--chunk-size", type=int, default=32, help="rows per runner call and per saved part (32)"
    )
    batch.add_argument("--max-new-tokens", type=int, help="most tokens to generate per row")
    batch.add_argument("--temperature", type=float, help="0 (default) is greedy and deterministic")
    batch.add_argument("--seed", type=int, help="random seed for sampling")
    batch.add_argument(
        "--ray",
        nargs="?",
        const=True,
        default=False,
        metavar="ADDRESS",
        help="run on Ray: a new local cluster, or the running one at ADDRESS (host:port, ray://..., auto)",
    )
    batch.add_argument("--actors", type=int, help="Ray actors, one engine each (default: as many as fit)")
    batch.add_argument("--threads-per-actor", type=int, default=1, help="CPUs (torch threads) per actor (1)")
    batch.add_argument("--gpus-per-actor", type=float, default=0, help="GPUs per actor, e.g. 1 (default 0)")
    batch.add_argument("--no-progress", action="store_true", help="no progress bar")
    batch.add_argument("--json", action="store_true", help="print the summary as JSON")


def run_batch_command(args: argparse.Namespace) -> int:
    """Run ``llmrun batch`` with parsed arguments; print a summary."""
    from llmrun.batch import run_batch

    load_options = {k: v for k, v in (("device", args.device), ("dtype", args.dtype)) if v}
    summary = run_batch(
        args.model,
        args.input,
        args.output,
        output_type=args.output_type,
        input_type=args.input_type,
        input_key=args.input_key,
        backend=args.backend,
        overwrite=args.overwrite,
        resume=args.resume,
        chunk_size=args.chunk_size,
        ray=args.ray,
        actors=args.actors,
        threads_per_actor=args.threads_per_actor,
        gpus_per_actor=args.gpus_per_actor,
        progress=not args.no_progress,
        generation={
            "max_new_tokens": args.max_new_tokens,
            "temperature": args.temperature,
            "seed": args.seed,
        },
        **load_options,
    )
    if args.json:
        print(json.dumps({**summary.__dict__, "output": str(summary.output)}))
    else:
        print(
            f"{summary.rows} rows -> {summary.output} ({summary.errors} with errors"
            + (f", {summary.skipped} done earlier" if summary.skipped else "")
            + f") in {summary.seconds:.1f}s"
        )
    return 0
