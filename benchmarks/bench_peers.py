"""llmrun against its peers on the CPU: transformers, CTranslate2 and llama.cpp, same weights, same ids.

One checkpoint (pythia-70m's architecture, seeded random float32 weights, pythia's real tokenizer
when ``../shared/assets`` has it; the LM head rows of padding ids zeroed), converted once to each
peer's format (:mod:`peer_formats`), and one set of prompt token ids. Every engine runs in its own
process (its own threads, allocator and caches), loaded once; the driver asks one engine at a time
to generate ``--new-tokens`` greedy tokens (end-of-text disabled everywhere, so every row makes
them all) for the batch, round after round, the order alternating. Each worker times its own call
and how much of the CPU other processes used meanwhile; a round is clean when they used at most
15%. Reported per engine and batch: median tokens/s over the clean rounds, the median of the
same-round ratios to plain transformers ``generate``, and greedy agreement with llmrun float32
(rows equal; share of tokens before the first difference).

Engines (``--engines``; those that cannot be imported or built are skipped with the reason):
``transformers``, ``transformers-compile`` (static cache + ``torch.compile``; off by default:
compiling takes minutes here), ``llmrun`` (float32), ``llmrun-int8`` (``quantize="int8"``, the
kernel this CPU gets), ``llmrun-int8-weight-only`` (the int8 kernel of CPUs without int8 dot
products, forced with ``LLMRUN_CPU_FEATURES=avx2``), ``ct2`` / ``ct2-int8`` (CTranslate2 float32 /
int8), ``llama.cpp-f32`` / ``-f16`` / ``-q8_0`` (llama-cpp-python's low-level API: one sequence
per row, greedy argmax over each row's logits).

    python benchmarks/bench_peers.py                  # batch 1 and 32, 5 clean rounds (~6-8 min)
    python benchmarks/bench_peers.py --rounds 1 --batches 1 --engines llmrun ct2
    python benchmarks/bench_peers.py --before /tmp/main/src   # llmrun engines also from another tree

``--before SRC`` runs every llmrun engine a second time, as ``<engine>@before``, with ``SRC`` (another
checkout's ``src``) first on its path: a before/after comparison in the same rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

DEFAULT_ENGINES = (
    "transformers",
    "llmrun",
    "llmrun-int8",
    "llmrun-int8-weight-only",
    "ct2",
    "ct2-int8",
    "llama.cpp-f32",
    "llama.cpp-f16",
    "llama.cpp-q8_0",
)
ALL_ENGINES = (*DEFAULT_ENGINES, "transformers-compile")
REFERENCE = "llmrun"  # greedy agreement is measured against llmrun float32
BASELINE = "transformers"  # ratios are to plain transformers generate, same round
CLEAN_SHARE = 0.15
BEFORE = "@before"  # suffix of the llmrun engines run from ``--before``'s source tree

Run = Callable[[list[list[int]], int], list[list[int]]]


# ----------------------------------------------------------------------------- the engines (workers)


def _left_pad(rows: list[list[int]]) -> tuple[Any, Any]:
    import torch

    width = max(len(r) for r in rows)
    ids = torch.zeros((len(rows), width), dtype=torch.long)  # [B, S]
    mask = torch.zeros((len(rows), width), dtype=torch.long)  # [B, S]
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r)
        mask[i, width - len(r) :] = 1
    return ids, mask


def _hf_model(folder: Path) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    model.generation_config.eos_token_id = None  # every row makes every token
    model.generation_config.pad_token_id = 0
    return model


def engine_transformers(folder: Path, compile_: bool = False) -> Run:
    import torch

    model = _hf_model(folder)
    extra: dict[str, Any] = {}
    if compile_:
        model.generation_config.cache_implementation = "static"
        model.forward = torch.compile(model.forward, mode="default", fullgraph=True)

    def run(rows: list[list[int]], n: int) -> list[list[int]]:
        ids, mask = _left_pad(rows)
        with torch.inference_mode():
            out = model.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=n, **extra)
        return [row[ids.shape[1] :] for row in out.tolist()]

    return run


def engine_llmrun(folder: Path, quantize: str = "none") -> Run:
    from llmrun.backends.local.decode import generate_tokens, prepare_model_for_decoding
    from llmrun.generation import GenerationConfig

    model = _hf_model(folder)
    prepared = prepare_model_for_decoding(model, quantize=quantize)

    def run(rows: list[list[int]], n: int) -> list[list[int]]:
        ids, mask = _left_pad(rows)
        greedy = GenerationConfig(max_new_tokens=n)
        return generate_tokens(prepared, ids, mask, max_new_tokens=n, config=greedy, eos_token_ids=())

    return run


def engine_ct2(folder: Path, work: Path, threads: int, compute_type: str) -> Run:
    import ctranslate2

    model_dir = work / "ct2"
    if not (model_dir / "model.bin").is_file():
        raise RuntimeError(f"no CTranslate2 model in {model_dir}")
    vocab_json, vocab_txt = model_dir / "vocabulary.json", model_dir / "vocabulary.txt"
    if vocab_json.is_file():  # CTranslate2's own id -> token table, as the converter wrote it
        vocab: list[str] = json.loads(vocab_json.read_text(encoding="utf-8"))
    else:
        vocab = vocab_txt.read_text(encoding="utf-8").split("\n")
    generator = ctranslate2.Generator(
        str(model_dir), device="cpu", compute_type=compute_type, intra_threads=threads, inter_threads=1
    )

    def run(rows: list[list[int]], n: int) -> list[list[int]]:
        starts = [[vocab[t] for t in r] for r in rows]
        results = generator.generate_batch(
            starts,
            max_length=n,
            min_length=n,  # no end-of-text before n tokens
            include_prompt_in_result=False,
            beam_size=1,
        )
        return [list(r.sequences_ids[0]) for r in results]

    return run


def engine_llama_cpp(work: Path, threads: int, kind: str, max_len: int) -> Run:
    """llama.cpp through llama-cpp-python's low-level API: one context per batch size (as many
    sequences as rows, a unified KV cache), every row a sequence, greedy argmax of its logits."""
    import ctypes

    import llama_cpp as ll
    import numpy as np

    path = work / f"model-{kind}.gguf"
    ll.llama_backend_init()
    model = ll.llama_model_load_from_file(str(path).encode(), ll.llama_model_default_params())
    if not model:
        raise RuntimeError(f"llama.cpp could not load {path}")
    vocab = ll.llama_vocab_n_tokens(ll.llama_model_get_vocab(model))
    contexts: dict[int, tuple[Any, Any]] = {}

    def context(rows: int) -> tuple[Any, Any]:
        if rows not in contexts:
            cparams = ll.llama_context_default_params()
            cparams.n_ctx = max_len * rows
            cparams.n_batch = max_len * rows
            cparams.n_ubatch = min(512, max_len * rows)
            cparams.n_seq_max = rows
            cparams.n_threads = threads
            cparams.n_threads_batch = threads
            if hasattr(cparams, "kv_unified"):
                cparams.kv_unified = True
            ctx = ll.llama_init_from_model(model, cparams)
            if not ctx:
                raise RuntimeError(f"llama.cpp could not create a context for {rows} sequences")
            contexts[rows] = (ctx, ll.llama_batch_init(max_len * rows, 0, rows))
        return contexts[rows]

    def fill(batch: Any, entries: list[tuple[int, int, int, bool]]) -> None:  # (token, pos, seq, logits?)
        batch.n_tokens = len(entries)
        for i, (tok, pos, seq, out) in enumerate(entries):
            batch.token[i] = tok
            batch.pos[i] = pos
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq
            batch.logits[i] = 1 if out else 0

    def argmax_rows(ctx: Any, count: int) -> list[int]:
        ptr = ctypes.cast(ll.llama_get_logits(ctx), ctypes.POINTER(ctypes.c_float))
        return [int(t) for t in np.ctypeslib.as_array(ptr, shape=(count, vocab)).argmax(axis=1)]

    def run(rows: list[list[int]], n: int) -> list[list[int]]:
        ctx, batch = context(len(rows))
        ll.llama_memory_clear(ll.llama_get_memory(ctx), True)
        fill(batch, [(tok, p, s, p == len(r) - 1) for s, r in enumerate(rows) for p, tok in enumerate(r)])
        if ll.llama_decode(ctx, batch) != 0:
            raise RuntimeError("llama_decode failed on the prompts")
        out: list[list[int]] = [[t] for t in argmax_rows(ctx, len(rows))]
        for step in range(1, n):
            pairs = enumerate(zip(rows, out, strict=True))
            fill(batch, [(o[-1], len(r) + step - 1, s, True) for s, (r, o) in pairs])
            if ll.llama_decode(ctx, batch) != 0:
                raise RuntimeError("llama_decode failed")
            for o, t in zip(out, argmax_rows(ctx, len(rows)), strict=True):
                o.append(t)
        return out

    return run


def make_engine(name: str, folder: Path, work: Path, threads: int, max_len: int) -> Run:
    name = name.removesuffix(BEFORE)  # the worker's path already points at the other tree
    if name == "transformers":
        return engine_transformers(folder)
    if name == "transformers-compile":
        return engine_transformers(folder, compile_=True)
    if name == "llmrun":
        return engine_llmrun(folder)
    if name == "llmrun-int8":
        return engine_llmrun(folder, "int8")
    if name == "llmrun-int8-weight-only":  # the kernel CPUs without int8 dot products get
        os.environ["LLMRUN_CPU_FEATURES"] = "avx2"
        return engine_llmrun(folder, "int8")
    if name in ("ct2", "ct2-int8"):
        return engine_ct2(folder, work, threads, "float32" if name == "ct2" else "int8")
    if name.startswith("llama.cpp-"):
        return engine_llama_cpp(work, threads, name.split("-", 1)[1], max_len)
    raise ValueError(f"unknown engine {name!r}; choose from {', '.join(ALL_ENGINES)}")


def _cpu_ticks() -> tuple[int, int, int] | None:
    from bench_generate import _cpu_ticks as ticks

    return ticks()


def worker(args: argparse.Namespace) -> int:
    """Load one engine, then answer ``{"batch": B}`` lines with ``{"seconds", "others", "tokens"}``."""
    import torch

    from bench_generate import others_share

    torch.set_num_threads(args.threads)
    prompts: dict[str, list[list[int]]] = json.loads(Path(args.prompts).read_text())
    max_len = max(len(r) for v in prompts.values() for r in v) + args.new_tokens + 8
    try:
        run = make_engine(args.worker, Path(args.folder), Path(args.work), args.threads, max_len)
        for rows in prompts.values():  # warm-up: allocations, kernels, oneDNN primitives
            run(rows, 4)
    except Exception as exc:  # reported to the driver, which skips this engine
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
        return 0
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        rows = prompts[str(request["batch"])]
        before = _cpu_ticks()
        start = time.perf_counter()
        try:
            tokens = run(rows, args.new_tokens)
        except Exception as exc:  # the driver drops this engine and says why
            print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
            return 0
        seconds = time.perf_counter() - start
        share = others_share(before, _cpu_ticks())
        print(json.dumps({"seconds": seconds, "others": share, "tokens": tokens}), flush=True)
    return 0


# ----------------------------------------------------------------------------- the driver


class Worker:
    """One engine's process: started, loaded, then asked for one timed call at a time."""

    def __init__(self, name: str, args: argparse.Namespace, folder: Path, work: Path, prompts: Path) -> None:
        self.name = name
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), TOKENIZERS_PARALLELISM="false")
        if name.endswith(BEFORE):  # the same engine from another source tree
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(args.before), env.get("PYTHONPATH")) if p)
        cmd = [sys.executable, str(Path(__file__)), "--worker", name, "--folder", str(folder)]
        cmd += ["--work", str(work), "--prompts", str(prompts), "--threads", str(args.threads)]
        cmd += ["--new-tokens", str(args.new_tokens)]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
        )
        self.error: str | None = None

    def wait_ready(self) -> bool:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.error = f"the worker exited (code {self.proc.wait()}) before it was ready"
            return False
        reply = json.loads(line)
        self.error = reply.get("error")
        return self.error is None

    def call(self, batch: int) -> dict[str, Any]:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"batch": batch}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the worker died (code {self.proc.wait()})")
        reply = dict(json.loads(line))
        if "error" in reply:
            raise RuntimeError(reply["error"])
        return reply

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def availability(name: str) -> str | None:
    """Why ``name`` cannot run here, or None."""
    import importlib.util

    if name.startswith("ct2") and importlib.util.find_spec("ctranslate2") is None:
        return "ctranslate2 is not installed (pip install ctranslate2)"
    if name.startswith("llama.cpp") and importlib.util.find_spec("llama_cpp") is None:
        return "llama-cpp-python is not installed or did not build (pip install llama-cpp-python)"
    if name.startswith("llama.cpp") and importlib.util.find_spec("gguf") is None:
        return "the gguf package is not installed (pip install gguf)"
    return None


def prepare(
    args: argparse.Namespace, work: Path, engines: list[str]
) -> tuple[Path, dict[str, Any], dict[str, str]]:
    """The checkpoint, the prompts file and each peer's converted model; returns skipped engines."""
    from bench_decode import prompt_ids
    from bench_generate import build_benchmark_checkpoint

    folder = work / "checkpoint"
    info = build_benchmark_checkpoint(folder, tiny=args.tiny)
    prompts = {str(b): prompt_ids(b) for b in args.batches}
    if args.tiny:  # the tiny tokenizer is not pythia's: keep the ids inside its vocabulary
        prompts = {b: [[t % info["tokenizer_size"] for t in r] for r in rows] for b, rows in prompts.items()}
    (work / "prompts.json").write_text(json.dumps(prompts))
    skipped: dict[str, str] = {}
    for name in engines:
        reason = availability(name)
        if reason:
            skipped[name] = reason
    if any(e.startswith("ct2") and e not in skipped for e in engines):
        from peer_formats import convert_ctranslate2

        try:
            convert_ctranslate2(folder, work / "ct2")
        except Exception as exc:
            for e in engines:
                if e.startswith("ct2"):
                    skipped[e] = f"conversion failed: {type(exc).__name__}: {exc}"
    for e in engines:
        if e.startswith("llama.cpp") and e not in skipped:
            from peer_formats import convert_gguf

            try:
                convert_gguf(folder, work / f"model-{e.split('-', 1)[1]}.gguf", e.split("-", 1)[1])
            except Exception as exc:
                skipped[e] = f"GGUF conversion failed: {type(exc).__name__}: {exc}"
    return folder, info, skipped


def agreement(rows: list[list[int]], ref: list[list[int]]) -> dict[str, float]:
    """Rows equal to the reference's, and the mean share of tokens before the first difference."""
    prefix = []
    for a, b in zip(rows, ref, strict=True):
        same = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
        prefix.append(same / max(1, len(b)))
    equal = sum(a == b for a, b in zip(rows, ref, strict=True))
    return {"rows_equal": equal / len(ref), "prefix_share": round(statistics.mean(prefix), 3)}


def measure(args: argparse.Namespace, workers: dict[str, Worker], skipped: dict[str, str]) -> dict[str, Any]:
    """Interleaved rounds per batch; medians over clean rounds; same-round ratios to the baseline.

    An engine that fails during a call is dropped (from every batch) and listed in ``skipped``.
    """
    from bench_generate import wait_for_quiet

    results: dict[str, Any] = {}
    names = list(workers)
    for batch in args.batches:
        times: dict[str, list[float]] = {n: [] for n in names}
        others: list[float | None] = []
        tokens: dict[str, list[list[int]]] = {}
        r = 0
        while sum(o is None or o <= CLEAN_SHARE for o in others) < args.rounds and r < 2 * args.rounds:
            wait_for_quiet(args.quiet_wait)
            shares: list[float] = []
            for name in list(names) if r % 2 == 0 else names[::-1]:
                try:
                    reply = workers[name].call(batch)
                except RuntimeError as exc:
                    skipped[name] = f"failed at batch {batch}: {exc}"
                    workers.pop(name).close()
                    names.remove(name)
                    continue
                times[name].append(float(reply["seconds"]))
                tokens.setdefault(name, reply["tokens"])
                if reply.get("others") is not None:
                    shares.append(float(reply["others"]))
            others.append(max(shares) if shares else None)
            r += 1
            print(f"  batch {batch}: round {r} done (others used {others[-1]})", file=sys.stderr, flush=True)
        clean = [o is None or o <= CLEAN_SHARE for o in others]
        clean_rounds = sum(clean)
        if not any(clean):  # a machine that never went quiet: every round counts (see clean_rounds)
            clean = [True] * len(others)
        per: dict[str, Any] = {}
        produced = batch * args.new_tokens
        times = {name: times[name] for name in names}
        for name in names:  # rounds in which an engine dropped out: keep each list aligned with `clean`
            if len(times[name]) != len(clean):
                raise RuntimeError(f"{name}: {len(times[name])} runs for {len(clean)} rounds")
        for name in names:
            picked = [t for t, ok in zip(times[name], clean, strict=True) if ok]
            row: dict[str, Any] = {"tok_s": round(produced / statistics.median(picked), 1)}
            if BASELINE in times:
                ratios = [b / t for t, b, ok in zip(times[name], times[BASELINE], clean, strict=True) if ok]
                row["ratio"] = round(statistics.median(ratios), 2)
            if REFERENCE in tokens:
                row["agreement_with_llmrun_float32"] = agreement(tokens[name], tokens[REFERENCE])
            row["runs_s"] = [round(t, 4) for t in times[name]]
            per[name] = row
        results[str(batch)] = {"engines": per, "others_cpu_share": others, "clean_rounds": clean_rounds}
    for result in results.values():  # engines dropped at a later batch leave the earlier ones too
        result["engines"] = {name: row for name, row in result["engines"].items() if name in workers}
    return results


def table(report: dict[str, Any]) -> str:
    """The markdown table: tokens/s (ratio to transformers) per engine and batch, and agreement."""
    batches = list(report["batches"])
    head = (
        "| engine | " + " | ".join(f"batch {b}" for b in batches) + " | greedy = llmrun float32 (rows, batch "
    )
    head += f"{batches[-1]}) |"
    lines = [head, "|---|" + "---:|" * len(batches) + "---:|"]
    engines = list(report["batches"][batches[0]]["engines"])
    for name in engines:
        cells = []
        for b in batches:
            row = report["batches"][b]["engines"][name]
            cells.append(f"{row['tok_s']:.0f} ({row.get('ratio', float('nan')):.2f}x)")
        agree = report["batches"][batches[-1]]["engines"][name].get("agreement_with_llmrun_float32")
        agree_s = f"{agree['rows_equal']:.0%} (prefix {agree['prefix_share']:.0%})" if agree else "-"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {agree_s} |")
    for name, why in report["skipped"].items():
        lines.append(f"| {name} | skipped: {why} |" + " |" * len(batches))
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    import torch

    from llmrun.backends.local.cpu_features import detect

    return {
        "cpu": platform.processor() or platform.machine(),
        "cpu_features": detect().describe(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--engines", nargs="+", default=list(DEFAULT_ENGINES), choices=ALL_ENGINES)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument(
        "--rounds", type=int, default=5, help="clean rounds wanted (at most twice as many run)"
    )
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--quiet-wait", type=float, default=10.0, help="seconds to wait for a quiet CPU per round"
    )
    parser.add_argument(
        "--tiny", action="store_true", help="tiny model and tokenizer: checks the script runs"
    )
    parser.add_argument("--json", type=Path, default=HERE / "results" / "peers.json")
    parser.add_argument(
        "--before", type=Path, help="another checkout's src/: each llmrun engine also runs from it"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--prompts", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)

    started = time.perf_counter()
    engines = list(dict.fromkeys(args.engines))
    if args.before is not None:
        if not (args.before / "llmrun" / "__init__.py").is_file():
            parser.error(f"--before {args.before}: no llmrun package there (give a checkout's src/)")
        engines += [e + BEFORE for e in engines if e.startswith("llmrun")]
    with tempfile.TemporaryDirectory(prefix="llmrun-peers-") as tmp:
        work = Path(tmp)
        folder, info, skipped = prepare(args, work, engines)
        print(
            f"prepared in {time.perf_counter() - started:.0f}s; skipped: {skipped or 'none'}", file=sys.stderr
        )
        workers: dict[str, Worker] = {}
        for name in engines:
            if name not in skipped:
                workers[name] = Worker(name, args, folder, work, work / "prompts.json")
        for name, w in list(workers.items()):  # they load in parallel; wait for each
            if not w.wait_ready():
                skipped[name] = w.error or "failed to start"
                w.close()
                del workers[name]
        try:
            results = measure(args, workers, skipped)
        finally:
            for w in workers.values():
                w.close()
    report = {
        "settings": {
            "new_tokens": args.new_tokens,
            "threads": args.threads,
            "rounds": args.rounds,
            "greedy": True,
            "eos": "disabled",
        },
        "model": info,
        "machine": machine(),
        "batches": results,
        "skipped": skipped,
        "seconds": round(time.perf_counter() - started, 1),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(table(report))
    print(f"\n{report['seconds']:.0f}s; JSON: {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
