"""Run llmrun's speed benchmarks, print the ratios against plain transformers, write JSON and a plot.

Runs ``bench_generate.py`` (end-to-end through ``LocalRunner``) and, when asked, the decode-loop
benchmark (``bench_decode.py``), the training benchmark (``bench_training.py``) and the CUDA check
(``gpu.py``), each in its own process. Writes ``benchmarks/results/bench.json`` (every figure, plus
a summary with the goals of issues 3 and 6) and ``benchmarks/results/tokens_per_s.png`` (tokens/s
against batch size, llmrun vs transformers). ``nox -s bench`` runs this.

    python benchmarks/run_all.py                 # about 3 minutes on a quiet 2-core machine
    python benchmarks/run_all.py --quick         # fewer rounds
    python benchmarks/run_all.py --decode --training --gpu
    python benchmarks/run_all.py --tiny          # a tiny model: checks the scripts run (seconds)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_RESULTS = HERE / "results"

#: (figure, target, how to compare) for the summary; figures come from :func:`summarize`.
GOALS: list[tuple[str, str, float, str]] = [
    ("generate_ratio_batch1", "llmrun / transformers tokens/s at batch 1", 3.0, ">="),
    ("generate_ratio_batch32", "llmrun / transformers tokens/s at batch 32", 2.0, ">="),
    ("generate_int8_ratio_batch1", "opt-in int8: llmrun / transformers float32 at batch 1", 3.0, ">="),
    ("typed_overhead_pct_batch1", "typed vs untyped cost per token at batch 1 (%)", 10.0, "<="),
    ("typed_overhead_pct_batch16", "typed vs untyped cost per token at batch 16 (%)", 10.0, "<="),
    ("grammar_first_compile_s", "first compile of the schema's grammar (s)", 0.5, "<"),
    ("grammar_first_typed_call_overhead_s", "first typed call: tokenizer setup + compile (s)", 0.5, "<"),
    ("gpu_batch1_pct_of_limit", "CUDA batch 1, best llmrun path, % of the bandwidth limit", 75.0, ">="),
]


def run_script(name: str, args: list[str], capture: bool = False) -> tuple[int, str]:
    """Run ``benchmarks/<name>`` with this Python; its output is shown as it comes."""
    command = [sys.executable, str(HERE / name), *args]
    print(f"\n$ {' '.join([Path(command[0]).name, *command[1:]])}", flush=True)
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    if not capture:
        return subprocess.run(command, env=env, check=False).returncode, ""
    lines: list[str] = []
    with subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as proc:
        for line in proc.stdout or ():
            print(line, end="", flush=True)
            lines.append(line)
    return proc.returncode, "".join(lines)


def read_json(path: Path, code: int, name: str) -> dict[str, Any]:
    if code != 0 or not path.is_file():
        return {"error": f"{name} exited with status {code}"}
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def parse_training(output: str, code: int) -> dict[str, Any]:
    """``bench_training.py`` prints ``fp32: llmrun N tok/s | Trainer M tok/s | ratio Rx`` lines."""
    if code != 0:
        return {"error": f"bench_training.py exited with status {code}", "output_tail": output[-2000:]}
    found = re.findall(
        r"(\w+): llmrun\s+([\d.]+) tok/s \| Trainer\s+([\d.]+) tok/s \| ratio ([\d.]+)x", output
    )
    return {
        precision: {"llmrun_tok_s": float(ours), "trainer_tok_s": float(theirs), "ratio": float(ratio)}
        for precision, ours, theirs, ratio in found
    } or {"error": "no result lines in the output", "output_tail": output[-2000:]}


def summarize(results: dict[str, Any]) -> dict[str, float]:
    """The headline figures, by name (only those that were measured)."""
    out: dict[str, float] = {}
    generate = results.get("generate", {})
    for row in generate.get("throughput", []):
        out[f"generate_ratio_batch{row['batch']}"] = row["ratio"]
        if "int8_ratio" in row:
            out[f"generate_int8_ratio_batch{row['batch']}"] = row["int8_ratio"]
    if "int8_numerics" in generate:
        out["int8_top1_agreement"] = generate["int8_numerics"]["top1_agreement_teacher_forced"]
    for row in generate.get("typed", []):
        out[f"typed_overhead_pct_batch{row['batch']}"] = row["overhead_per_token_pct"]
        out[f"typed_vs_full_rows_pct_batch{row['batch']}"] = row["overhead_vs_full_length_rows_pct"]
    if "grammar_compile" in generate:
        out["grammar_first_compile_s"] = generate["grammar_compile"]["first_compile_s"]
        out["grammar_tokenizer_setup_s"] = generate["grammar_compile"]["tokenizer_setup_s"]
        out["grammar_first_typed_call_overhead_s"] = generate["grammar_compile"][
            "first_typed_call_overhead_s"
        ]
        out["grammar_cached_ms"] = round(generate["grammar_compile"]["cached_s"] * 1e3, 3)
    if "ttft" in generate:
        out["ttft_ratio"] = generate["ttft"]["ratio"]
    if "memory" in generate:
        out["memory_ratio"] = generate["memory"]["ratio"]
    for row in results.get("decode", {}).get("results", []):
        out[f"decode_ratio_batch{row['batch']}"] = row["speedup"]
    for precision, row in results.get("training", {}).items():
        if isinstance(row, dict) and "ratio" in row:
            out[f"training_ratio_{precision}"] = row["ratio"]
    gpu = results.get("gpu", {})
    if gpu.get("device", {}).get("type") == "cuda" and "batch1_pct_of_bandwidth_limit" in gpu:
        pct = gpu["batch1_pct_of_bandwidth_limit"]
        out["gpu_batch1_pct_of_limit"] = max(v for k, v in pct.items() if k.startswith("llmrun"))
    return out


def goals(summary: dict[str, float]) -> list[dict[str, Any]]:
    checks = []
    for key, what, target, op in GOALS:
        if key not in summary:
            continue
        value = summary[key]
        met = value >= target if op == ">=" else value <= target if op == "<=" else value < target
        checks.append({"figure": key, "what": what, "value": value, "target": f"{op} {target:g}", "met": met})
    return checks


def _row(label: str, theirs: float | str, ours: float | str, ratio: float | str, fmt: str = ".1f") -> str:
    def cell(v: float | str, width: int) -> str:
        return f"{v:>{width}{fmt}}" if isinstance(v, float | int) else f"{v:>{width}}"

    ratio_text = f"{ratio:.2f}x" if isinstance(ratio, float | int) else ratio
    return f"{label:<44}{cell(theirs, 13)}{cell(ours, 11)}{ratio_text:>10}"


def print_table(results: dict[str, Any], checks: list[dict[str, Any]]) -> None:
    generate = results.get("generate", {})
    print("\n" + "=" * 78)
    machine = generate.get("machine", {})
    if machine:
        print(
            f"CPU: {machine['cpu_count']} cores, {machine['torch_threads']} torch threads, load average "
            f"{machine['load_avg_start'][0]} at the start, {machine.get('load_avg_end', ['?'])[0]} at the end"
        )
    print(_row("figure", "transformers", "llmrun", "ratio"))
    for row in generate.get("throughput", []):
        label = f"tokens/s, batch {row['batch']}"
        print(_row(label, row["transformers_tok_s"], row["llmrun_tok_s"], row["ratio"]))
    for row in generate.get("throughput", []):
        if "int8_tok_s" in row:
            label = f"tokens/s, batch {row['batch']}, quantize='int8'"
            print(_row(label, row["transformers_tok_s"], row["int8_tok_s"], row["int8_ratio"]))
    if "int8_numerics" in generate:
        q = generate["int8_numerics"]
        print(
            f"{'int8 vs float32 (teacher-forced)':<48}top token agrees "
            f"{100 * q['top1_agreement_teacher_forced']:.1f}%, logit error "
            f"{100 * q['max_logit_error_of_scale_median']:.2f}% of scale"
        )
    if "ttft" in generate:
        t = generate["ttft"]
        print(_row("time to first text (ms)", t["transformers_ms"], t["llmrun_ms"], t["ratio"]))
    if "memory" in generate:
        m = generate["memory"]
        label = "peak memory above imports (MiB)"
        print(_row(label, m["transformers"]["delta_mib"], m["llmrun"]["delta_mib"], m["ratio"], ".0f"))
    for row in results.get("decode", {}).get("results", []):
        label = f"decode loop only, tokens/s, batch {row['batch']}"
        print(_row(label, row["transformers_tok_s"], row["llmrun_tok_s"], row["speedup"]))
    for row in generate.get("typed", []):
        print(
            f"{'typed vs untyped, batch ' + str(row['batch']):<48}{row['overhead_per_token_pct']:+.1f}% per "
            f"token (rows of equal length), {row['overhead_vs_full_length_rows_pct']:+.1f}% vs long rows"
        )
    if "grammar_compile" in generate:
        g = generate["grammar_compile"]
        print(
            f"{'grammar compile: tokenizer setup, first, cached':<48}{g['tokenizer_setup_s'] * 1e3:.0f} ms, "
            f"{g['first_compile_s'] * 1e3:.0f} ms, {g['cached_s'] * 1e3:.3f} ms"
        )
    for precision, row in results.get("training", {}).items():
        if isinstance(row, dict) and "ratio" in row:
            label = f"training tokens/s, {precision}"
            print(_row(label, row["trainer_tok_s"], row["llmrun_tok_s"], row["ratio"], ".0f"))
    for row in results.get("gpu", {}).get("results", []):
        if "skipped" in row:
            continue
        best = max((k for k in row if k.startswith("llmrun")), key=lambda k: row[k].get("tok_s", 0))
        label = f"gpu tokens/s, batch {row['batch']} ({best})"
        print(_row(label, row["transformers"]["tok_s"], row[best]["tok_s"], row[best]["ratio"]))
    if checks:
        print("-" * 78)
        for c in checks:
            print(f"{'met ' if c['met'] else 'MISSED '}{c['what']}: {c['value']:g} (goal {c['target']})")
    for name, part in results.items():
        if isinstance(part, dict) and "error" in part:
            print(f"FAILED: {name}: {part['error']}")
    print("=" * 78)


def plot(results: dict[str, Any], path: Path) -> None:
    """tokens/s against batch size, llmrun vs transformers (end to end; decode loop when measured)."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    rows = results.get("generate", {}).get("throughput", [])
    if rows:
        batches = [r["batch"] for r in rows]
        ax.plot(batches, [r["llmrun_tok_s"] for r in rows], "o-", color="C0", label="llmrun LocalRunner")
        ax.plot(
            batches, [r["transformers_tok_s"] for r in rows], "s-", color="C1", label="transformers generate"
        )
        if all("int8_tok_s" in r for r in rows):
            ax.plot(batches, [r["int8_tok_s"] for r in rows], "^:", color="C2",
                    label="llmrun quantize='int8' (opt-in, approximate)")  # fmt: skip
        for r in rows:
            ax.annotate(
                f"x{r['ratio']:.2f}",
                (r["batch"], r["llmrun_tok_s"]),
                textcoords="offset points",
                xytext=(6, 6),
            )
    decode_rows = results.get("decode", {}).get("results", [])
    if decode_rows:
        batches = [r["batch"] for r in decode_rows]
        ax.plot(batches, [r["llmrun_tok_s"] for r in decode_rows], "o--", color="C0", alpha=0.5,
                label="llmrun generate_tokens (decode loop)")  # fmt: skip
        ax.plot(batches, [r["transformers_tok_s"] for r in decode_rows], "s--", color="C1", alpha=0.5,
                label="transformers generate (token ids)")  # fmt: skip
    ax.margins(x=0.12)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    all_batches = sorted({r["batch"] for r in rows} | {r["batch"] for r in decode_rows})
    ax.set_xticks(all_batches, [str(b) for b in all_batches])
    ax.set_xlabel("batch size")
    ax.set_ylabel("generated tokens / s")
    model = results.get("generate", {}).get("model", {}).get("model", "")
    machine = results.get("generate", {}).get("machine", {})
    ax.set_title(
        f"{model.split(' (')[0]}, float32, greedy, CPU ({machine.get('cpu_count', '?')} cores)", fontsize=10
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--tiny", action="store_true", help="tiny models: checks that every script runs")
    parser.add_argument("--decode", action="store_true", help="also bench_decode.py (decode loop only)")
    parser.add_argument("--training", action="store_true", help="also bench_training.py")
    parser.add_argument(
        "--gpu", action="store_true", help="also gpu.py (needs CUDA; with --tiny: a tiny model on the CPU)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads for every benchmark")
    parser.add_argument(
        "--results-dir", type=Path, default=DEFAULT_RESULTS, help=f"default: {DEFAULT_RESULTS}"
    )
    args = parser.parse_args(argv)

    out_dir: Path = args.results_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    size = ["--tiny"] if args.tiny else ["--quick"] if args.quick else []
    threads = ["--threads", str(args.threads)] if args.threads is not None else []
    results: dict[str, Any] = {"started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}

    code, _ = run_script("bench_generate.py", [*size, *threads, "--json", str(out_dir / "generate.json")])
    results["generate"] = read_json(out_dir / "generate.json", code, "bench_generate.py")
    if args.decode:
        rounds = ["--batches", "1", "4", "--new-tokens", "16", "--rounds", "1"] if args.tiny else []
        rounds = ["--rounds", "2"] if args.quick and not args.tiny else rounds
        code, _ = run_script("bench_decode.py", [*rounds, *threads, "--json", str(out_dir / "decode.json")])
        results["decode"] = read_json(out_dir / "decode.json", code, "bench_decode.py")
    if args.training:
        extra = ["--steps", "2", "--repeats", "1", "--precision", "fp32"] if args.tiny or args.quick else []
        code, output = run_script("bench_training.py", [*extra, *threads], capture=True)
        results["training"] = parse_training(output, code)
    if args.gpu:
        extra = ["--tiny"] if args.tiny else []
        code, _ = run_script("gpu.py", [*extra, *threads, "--json", str(out_dir / "gpu.json")])
        results["gpu"] = read_json(out_dir / "gpu.json", code, "gpu.py")

    results["summary"] = summarize(results)
    results["goals"] = [] if args.tiny else goals(results["summary"])  # a tiny model says nothing of them
    results["elapsed_s"] = round(time.perf_counter() - started, 1)
    (out_dir / "bench.json").write_text(json.dumps(results, indent=2) + "\n")
    print_table(results, results["goals"])
    plot(results, out_dir / "tokens_per_s.png")
    print(f"wrote {out_dir / 'bench.json'} and {out_dir / 'tokens_per_s.png'} ({results['elapsed_s']:.0f} s)")
    failed = [name for name, part in results.items() if isinstance(part, dict) and "error" in part]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
