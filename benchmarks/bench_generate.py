"""End-to-end generation speed: ``LocalRunner`` against plain transformers, on the same checkpoint.

The model is the pythia-70m architecture (GPTNeoX: 6 layers, hidden 512, 8 heads, rotary_pct 0.25,
vocab 50,304) with seeded random weights, saved in float32 as a checkpoint folder in a temporary
directory; speed does not depend on the weight values. The tokenizer is pythia's real one
(``../shared/assets/tokenizers/pythia/tokenizer.json``) when present, else a byte-level BPE trained
on the spot. The LM head rows of the ids past the tokenizer's vocabulary (embedding padding) are
zeroed, so neither path ever picks them (as with trained weights) and greedy texts can be compared.

Both paths take strings and return strings (tokenizing and decoding included) and run in this
process, interleaved round by round (the order alternating). On a shared machine a round counts
only when other processes used at most 15% of the CPU during it (measured from ``/proc/stat``);
rounds go on until ``--rounds`` are clean or twice as many ran. Figures are medians of the clean
rounds.

- **throughput**: tokens/s at batch 1, 8 and 32 with 64 new tokens, greedy: plain
  ``model.generate`` (left-padded) vs ``runner(prompts)``; their ratio; whether the texts are equal.
  The same for the opt-in ``quantize="int8"`` runner (other numerics: its texts are not expected to
  be equal), with how far its logits are from float32's and how often its top token agrees when
  both follow the float32 greedy continuation (teacher-forced, so one early difference does not
  count for every later token).
- **typed**: per-token cost of ``runner(questions, output_type=Answer)`` (a 4-field type) against
  the runner's untyped decode of the same rendered prompts with each row stopped at the typed
  row's length (same tokens, same batch shape: the grammar's own cost), at batch 1 and 16; also
  against untyped rows that all run as many steps as the longest typed row. Tokens are those the
  decode loop actually produced (counted by wrapping ``decode.generate_tokens``).
- **grammar compile**: in a fresh subprocess: the tokenizer's one-time xgrammar setup, the first
  compile of the schema, and a cached call.
- **time to first token**: ``runner.stream(prompt)`` vs ``generate(streamer=TextIteratorStreamer)``,
  each from the call to the first non-empty text piece.
- **peak memory**: each path in its own fresh subprocess (load, then one generation at the largest
  batch): peak RSS minus the RSS after the imports. The peak is Linux's ``VmHWM``, reset after the
  imports through ``/proc/self/clear_refs``; where that is not possible, ``ru_maxrss``.

    python benchmarks/bench_generate.py [--quick] [--rounds 5] [--typed-rounds 3] [--json out.json]
    python benchmarks/bench_generate.py --tiny     # a tiny model, seconds: checks the script runs
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
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from llmrun import Context, Type

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PYTHIA_TOKENIZER = ROOT.parent / "shared" / "assets" / "tokenizers" / "pythia" / "tokenizer.json"
DEFAULT_JSON = HERE / "results" / "generate.json"
#: A round counts ("clean") when other processes used at most this share of the CPU during its calls.
CLEAN_SHARE = 0.15
#: Tokens each time-to-first-token call generates (the rest of the stream is drained untimed).
TTFT_NEW_TOKENS = 16

PROMPTS = [
    "Question: What is the highest mountain in the world? Answer:",
    "Question: Who wrote the play Hamlet? Answer:",
    "The quick brown fox jumps over the lazy dog. Then it",
    "Question: What is the capital of France, and what is it famous for? Answer:",
    "Once upon a time",
    "Question: How many days are there in a leap year? Answer:",
    "A language model predicts the next word in a sequence of text. It is trained on",
    "def add(a, b):\n    return",
]

QUESTIONS = [
    "What is the highest mountain in the world?",
    "Who wrote the play Hamlet?",
    "Why is the sky blue?",
    "When did the Roman Empire fall?",
    "What is the boiling point of water at sea level?",
    "Which planet is closest to the sun?",
    "How do vaccines work?",
    "What is the longest river in Africa?",
]


class Question(Type):
    question: str = Context("a question about the world")


class Answer(Type):
    """The typical output type of the typed benchmark: four fields of four kinds."""

    answer: str = Context("a short factual answer")
    confidence: float = Context("how sure the answer is, 0 to 1", ge=0, le=1)
    category: Literal["geography", "history", "science", "other"] = Context("the topic of the question")
    keywords: list[str] = Context("a few keywords of the answer")


@dataclass(frozen=True)
class Settings:
    batches: list[int]
    typed_batches: list[int]
    new_tokens: int
    typed_budget: int | None  # None: the runner's default budget for typed calls
    rounds: int
    typed_rounds: int
    quiet_wait_s: float
    tiny: bool


# ----------------------------------------------------------------------------- the checkpoint


def make_tokenizer(tiny: bool) -> tuple[Any, str]:
    """Pythia's real tokenizer when present (and not ``tiny``), else one trained on the spot."""
    from llmrun.testing.checkpoints import load_pythia_tokenizer, train_byte_level_bpe_tokenizer

    if not tiny and PYTHIA_TOKENIZER.is_file():
        return load_pythia_tokenizer(PYTHIA_TOKENIZER), "GPT-NeoX-20B (pythia's real tokenizer)"
    return train_byte_level_bpe_tokenizer(), "byte-level BPE trained on the spot (512 tokens)"


def build_benchmark_checkpoint(dest: Path, tiny: bool) -> dict[str, Any]:
    """Write the float32 checkpoint to ``dest``; returns a description of model and tokenizer."""
    from llmrun.testing.checkpoints import (
        build_checkpoint,
        padded_vocab_size,
        pythia_70m_config,
        tiny_config,
    )

    tokenizer, tokenizer_name = make_tokenizer(tiny)
    if tiny:
        config = tiny_config(
            "gpt_neox",
            padded_vocab_size(len(tokenizer)),
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        name = "tiny GPTNeoX (2 layers, hidden 64)"
    else:
        config = pythia_70m_config()
        name = "pythia-70m architecture (GPTNeoX, 6 layers, hidden 512, vocab 50,304)"
    build_checkpoint(dest, config, tokenizer, seed=0, dtype="float32")
    zero_padding_rows(dest, len(tokenizer))
    return {
        "model": name,
        "dtype": "float32",
        "weights": "random (seed 0); LM head rows of padding ids zeroed",
        "tokenizer": tokenizer_name,
        "tokenizer_size": len(tokenizer),
        "vocab_size": int(config.vocab_size),
    }


def zero_padding_rows(folder: Path, n_tokens: int) -> None:
    """Zero the LM head rows of ids ``>= n_tokens``: their logits become 0, far below the row maxima."""
    from safetensors.torch import load_file, save_file

    path = folder / "model.safetensors"
    state = load_file(str(path))
    heads = [k for k in state if k.endswith(("embed_out.weight", "lm_head.weight"))]
    if len(heads) != 1:
        raise RuntimeError(f"expected one LM head weight in {path}, found {heads}")
    state[heads[0]][n_tokens:] = 0.0
    save_file(state, str(path), metadata={"format": "pt"})


# ----------------------------------------------------------------------------- the two paths


class PlainTransformers:
    """What a user writes by hand: ``AutoModelForCausalLM`` + left-padding tokenizer + ``generate``."""

    def __init__(self, folder: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(str(folder), dtype="float32").eval()

    def generate(self, prompts: list[str], new_tokens: int) -> tuple[list[str], list[int]]:
        """Greedy texts and the number of new tokens of each row (up to its EOS)."""
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True)
        out = self.model.generate(
            **enc,
            do_sample=False,
            max_new_tokens=new_tokens,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        new = out[:, enc["input_ids"].shape[1] :]  # [B, N]
        texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
        return texts, [_count_until_eos(row, self.eos_ids) for row in new.tolist()]

    @property
    def eos_ids(self) -> set[int]:
        eos = self.model.generation_config.eos_token_id
        ids = set(eos if isinstance(eos, list) else [] if eos is None else [eos])
        return ids | {self.tokenizer.eos_token_id}

    def first_text_s(self, prompt: str, new_tokens: int) -> float:
        """Seconds from the call to the first non-empty piece of ``TextIteratorStreamer``."""
        from transformers import TextIteratorStreamer

        start = time.perf_counter()
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        enc = self.tokenizer([prompt], return_tensors="pt")
        kwargs = dict(
            **enc,
            streamer=streamer,
            do_sample=False,
            max_new_tokens=new_tokens,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        worker = threading.Thread(target=self.model.generate, kwargs=kwargs)
        worker.start()
        return _first_piece_then_drain(streamer, start, worker.join)


def _count_until_eos(row: list[int], eos: set[int]) -> int:
    for i, token in enumerate(row):
        if token in eos:
            return i
    return len(row)


def _first_piece_then_drain(pieces: Iterator[str], start: float, finish: Callable[[], None]) -> float:
    """Seconds from ``start`` to the first non-empty piece; the rest is consumed, then ``finish()``."""
    first: float | None = None
    for piece in pieces:
        if piece and first is None:
            first = time.perf_counter() - start
    finish()
    if first is None:
        raise RuntimeError("the stream produced no text")
    return first


def load_runner(folder: Path, quantize: str = "none") -> Any:
    import llmrun

    return llmrun.load(str(folder), backend="local", device="cpu", dtype="float32", quantize=quantize)


def runner_first_text_s(runner: Any, prompt: str, new_tokens: int) -> float:
    """Seconds from ``runner.stream(...)`` to its first text piece (the rest is drained, untimed)."""
    start = time.perf_counter()
    return _first_piece_then_drain(runner.stream(prompt, max_new_tokens=new_tokens), start, lambda: None)


@contextmanager
def counting_decoded_tokens() -> Iterator[list[list[int]]]:
    """Record how many tokens each row of each ``decode.generate_tokens`` call produced.

    The runner calls ``decode.generate_tokens`` through its module; a thin wrapper that calls the
    real function and notes the lengths of its result is put there for the duration.
    """
    from llmrun.backends.local import decode

    real = decode.generate_tokens
    counts: list[list[int]] = []

    def counted(*args: Any, **kwargs: Any) -> list[list[int]]:
        rows = real(*args, **kwargs)
        counts.append([len(r) for r in rows])
        return rows

    decode.generate_tokens = counted
    try:
        yield counts
    finally:
        decode.generate_tokens = real


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def _cpu_ticks() -> tuple[int, int, int] | None:
    """(all cores' total ticks, their busy ticks, this process's ticks), or None without ``/proc``."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:]]
        with open("/proc/self/stat") as f:
            own = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    total = sum(ticks[:8])  # user nice system idle iowait irq softirq steal
    return total, total - ticks[3] - ticks[4], int(own[11]) + int(own[12])  # utime + stime


def others_share(before: tuple[int, int, int] | None, after: tuple[int, int, int] | None) -> float | None:
    """Share of the machine's CPU that other processes used between two :func:`_cpu_ticks`."""
    if before is None or after is None or after[0] - before[0] < 20:  # too short to tell (10 ms ticks)
        return None
    theirs = (after[1] - before[1]) - (after[2] - before[2])
    return round(max(0, theirs) / (after[0] - before[0]), 3)


def wait_for_quiet(max_wait_s: float, threshold: float = CLEAN_SHARE) -> None:
    """Wait (up to ``max_wait_s``) until other processes leave the CPU mostly idle."""
    deadline = time.perf_counter() + max_wait_s
    while time.perf_counter() < deadline:
        before = _cpu_ticks()
        time.sleep(0.5)
        share = others_share(before, _cpu_ticks())
        if share is None or share <= threshold:
            return


@dataclass
class Rounds:
    """Seconds of each call per round, and whether other processes left each round alone."""

    times: dict[str, list[float]]
    others: list[float | None]  # the most other processes used of the CPU during a call of the round

    @property
    def clean(self) -> list[bool]:
        return [o is None or o <= CLEAN_SHARE for o in self.others]

    def median(self, name: str) -> float:
        """Median over the clean rounds (all rounds where none was clean)."""
        picked = [t for t, ok in zip(self.times[name], self.clean, strict=True) if ok] or self.times[name]
        return statistics.median(picked)

    def best(self, name: str) -> float:
        return min(self.times[name])

    def report(self) -> dict[str, Any]:
        return {
            "runs_s": {k: [round(v, 5) for v in vs] for k, vs in self.times.items()},
            "others_cpu_share": self.others,
            "clean_rounds": sum(self.clean),
        }


def interleave(calls: dict[str, Callable[[], Any]], rounds: int, quiet_wait_s: float) -> Rounds:
    """Time each call once per round, the order alternating, until ``rounds`` rounds were clean
    (other processes used at most :data:`CLEAN_SHARE` of the CPU during each call) or twice as many
    rounds were run. Before each round, waits up to ``quiet_wait_s`` for a quiet machine."""
    result = Rounds({name: [] for name in calls}, [])
    order = list(calls.items())
    r = 0
    while sum(result.clean) < rounds and r < (2 * rounds if quiet_wait_s > 0 else rounds):
        wait_for_quiet(quiet_wait_s)
        shares: list[float] = []
        for name, fn in order if r % 2 == 0 else order[::-1]:
            before = _cpu_ticks()
            result.times[name].append(timed(fn)[0])
            share = others_share(before, _cpu_ticks())
            if share is not None:
                shares.append(share)
        result.others.append(max(shares) if shares else None)
        r += 1
    return result


def prompts_for(batch: int) -> list[str]:
    return [PROMPTS[i % len(PROMPTS)] for i in range(batch)]


def questions_for(batch: int) -> list[Question]:
    return [Question(question=QUESTIONS[i % len(QUESTIONS)]) for i in range(batch)]


# ----------------------------------------------------------------------------- measurements


def measure_throughput(plain: PlainTransformers, runner: Any, int8: Any, s: Settings) -> list[dict[str, Any]]:
    """(a) and (b): tokens/s of each path per batch size, interleaved round by round."""
    n = s.new_tokens
    rows = []
    for b in s.batches:
        prompts = prompts_for(b)
        texts, counts = plain.generate(prompts, n)  # warm-up: first-call allocations, oneDNN kernels
        equal = runner(prompts, max_new_tokens=n) == texts
        int8_equal = sum(a == b for a, b in zip(int8(prompts, max_new_tokens=n), texts, strict=True))
        tokens = sum(counts)
        rounds = interleave(
            {
                "transformers": lambda p=prompts: plain.generate(p, n),
                "llmrun": lambda p=prompts: runner(p, max_new_tokens=n),
                "llmrun_int8": lambda p=prompts: int8(p, max_new_tokens=n),
            },
            s.rounds,
            s.quiet_wait_s,
        )
        t_plain, t_ours, t_int8 = (rounds.median(k) for k in ("transformers", "llmrun", "llmrun_int8"))
        rows.append(
            {
                "batch": b,
                "new_tokens": n,
                "tokens": tokens,
                "transformers_tok_s": round(tokens / t_plain, 1),
                "llmrun_tok_s": round(tokens / t_ours, 1),
                "ratio": round(t_plain / t_ours, 2),
                "best_ratio": round(rounds.best("transformers") / rounds.best("llmrun"), 2),
                "greedy_texts_equal": equal,
                "int8_tok_s": round(tokens / t_int8, 1),
                "int8_ratio": round(t_plain / t_int8, 2),
                "int8_texts_equal_to_float32": f"{int8_equal} of {b}",
                **rounds.report(),
            }
        )
        print(
            f"  batch {b:>3}: transformers {rows[-1]['transformers_tok_s']:8.1f} tok/s   "
            f"llmrun {rows[-1]['llmrun_tok_s']:8.1f} tok/s   x{rows[-1]['ratio']:.2f} "
            f"(best rounds x{rows[-1]['best_ratio']:.2f}; {rows[-1]['clean_rounds']} clean rounds of "
            f"{len(rounds.others)})   texts equal: {equal}   | int8 {rows[-1]['int8_tok_s']:8.1f} tok/s "
            f"x{rows[-1]['int8_ratio']:.2f}",
            flush=True,
        )
    return rows


def measure_int8_numerics(runner: Any, int8: Any, s: Settings) -> dict[str, Any]:
    """How far int8 logits are from float32's, following the float32 greedy continuation."""
    import torch

    from llmrun.backends.local.decode import generate_tokens, left_pad
    from llmrun.generation import GenerationConfig

    prompts = prompts_for(max(s.batches))
    engine = runner.engine
    ids, mask = left_pad([engine.tokenizer(p)["input_ids"] for p in prompts], device=engine.device)
    n = s.new_tokens
    exact_tokens = generate_tokens(
        engine.prepared, ids, mask, max_new_tokens=n, config=GenerationConfig(), eos_token_ids=()
    )
    forced = torch.tensor(exact_tokens)  # [B, N]: every row has n tokens (no EOS given)
    sessions = [r.engine.prepared.decoder().start(ids, mask, n) for r in (runner, int8)]
    agree, steps, rel_errors = 0, 0, []
    with torch.inference_mode():
        logits = [session.prefill() for session in sessions]
        for t in range(n):
            exact, approx = logits
            real = exact[:, : len(runner.tokenizer)], approx[:, : len(runner.tokenizer)]
            agree += int((real[0].argmax(-1) == real[1].argmax(-1)).sum())
            steps += exact.shape[0]
            rel_errors.append(float((real[1] - real[0]).abs().amax() / real[0].abs().amax()))
            if t < n - 1:
                logits = [session.step(forced[:, t]) for session in sessions]
    result = {
        "rows": len(prompts),
        "steps_per_row": n,
        "top1_agreement_teacher_forced": round(agree / steps, 4),
        "max_logit_error_of_scale_median": round(statistics.median(rel_errors), 4),
        "max_logit_error_of_scale_worst": round(max(rel_errors), 4),
    }
    print(
        f"  int8 vs float32, teacher-forced over {steps} tokens: top token agrees "
        f"{100 * result['top1_agreement_teacher_forced']:.1f}%; largest logit error "
        f"{100 * result['max_logit_error_of_scale_median']:.2f}% of the logits' scale (median step), "
        f"{100 * result['max_logit_error_of_scale_worst']:.2f}% (worst)",
        flush=True,
    )
    return result


def untyped_with_lengths(runner: Any, prompts: list[str], lengths: list[int]) -> list[str]:
    """What ``runner(prompts)`` does, each row stopped after ``lengths[row]`` tokens (no EOS)."""
    from llmrun.backends.local import decode
    from llmrun.generation import GenerationConfig

    engine = runner.engine
    ids, mask = decode.left_pad([engine.encode(p, max(lengths)) for p in prompts], device=engine.device)
    tokens = decode.generate_tokens(
        engine.prepared,
        ids,
        mask,
        max_new_tokens=max(lengths),
        config=GenerationConfig(),
        eos_token_ids=(),
        should_stop=lambda row, toks: len(toks) >= lengths[row],
        vocab_size=engine.vocab_size,
    )
    return [engine.decode(t) for t in tokens]


def measure_typed(runner: Any, s: Settings) -> list[dict[str, Any]]:
    """(c): per-token cost of typed calls against untyped calls on the same prompts."""
    from llmrun.schema import render_prompt

    n = s.typed_budget
    rows = []
    for b in s.typed_batches:
        questions = questions_for(b)
        rendered = [render_prompt(q, Answer) for q in questions]
        with counting_decoded_tokens() as counts:
            answers = runner(questions, output_type=Answer, max_new_tokens=n)  # warm-up; compiles
        typed_counts = counts[-1]
        steps = max(typed_counts)
        with counting_decoded_tokens() as counts:
            runner(rendered, max_new_tokens=steps)
        untyped_counts = counts[-1]
        rounds = interleave(
            {
                "typed": lambda q=questions: runner(q, output_type=Answer, max_new_tokens=n),
                "untyped": lambda p=rendered, k=steps: runner(p, max_new_tokens=k),
                "same_lengths": lambda p=rendered, c=typed_counts: untyped_with_lengths(runner, p, c),
            },
            s.typed_rounds,
            s.quiet_wait_s,
        )
        t_typed, t_untyped = rounds.median("typed"), rounds.median("untyped")
        t_same = rounds.median("same_lengths")
        typed_tokens, untyped_tokens = sum(typed_counts), sum(untyped_counts)
        per_typed, per_untyped = t_typed / typed_tokens, t_untyped / untyped_tokens
        rows.append(
            {
                "batch": b,
                "max_new_tokens": n if n is not None else "default",
                "decode_steps": steps,
                "typed_tokens": typed_tokens,
                "untyped_tokens": untyped_tokens,
                "typed_ms_per_token": round(per_typed * 1e3, 3),
                "untyped_ms_per_token": round(per_untyped * 1e3, 3),
                "overhead_per_token_pct": round((t_typed / t_same - 1) * 100, 1),
                "overhead_vs_full_length_rows_pct": round((per_typed / per_untyped - 1) * 100, 1),
                "all_valid": all(isinstance(a, Answer) for a in answers),
                **rounds.report(),
            }
        )
        print(
            f"  batch {b:>3}: typed {rows[-1]['typed_ms_per_token']:.3f} ms/token ({typed_tokens} tokens)   "
            f"overhead {rows[-1]['overhead_per_token_pct']:+.1f}% per token (untyped rows of the same "
            f"lengths), {rows[-1]['overhead_vs_full_length_rows_pct']:+.1f}% against untyped rows of "
            f"{steps} tokens ({rows[-1]['untyped_ms_per_token']:.3f} ms/token)",
            flush=True,
        )
    return rows


def measure_ttft(plain: PlainTransformers, runner: Any, s: Settings) -> dict[str, Any]:
    """(e): time to the first text piece when streaming one prompt."""
    prompt, n = PROMPTS[0], min(s.new_tokens, TTFT_NEW_TOKENS)  # only the first piece is timed
    plain.first_text_s(prompt, n)  # warm-up
    runner_first_text_s(runner, prompt, n)
    runs: dict[str, list[float]] = {"transformers": [], "llmrun": []}
    calls: list[tuple[str, Callable[[], float]]] = [
        ("transformers", lambda: plain.first_text_s(prompt, n)),
        ("llmrun", lambda: runner_first_text_s(runner, prompt, n)),
    ]
    for r in range(s.rounds):  # the time is measured inside each call (the first piece, not the whole)
        for name, fn in calls if r % 2 == 0 else calls[::-1]:
            runs[name].append(fn())
    t_plain, t_ours = statistics.median(runs["transformers"]), statistics.median(runs["llmrun"])
    result = {
        "prompt_tokens": len(plain.tokenizer(prompt)["input_ids"]),
        "new_tokens": n,
        "transformers_ms": round(t_plain * 1e3, 2),
        "llmrun_ms": round(t_ours * 1e3, 2),
        "ratio": round(t_plain / t_ours, 2),
        "runs_s": {k: [round(v, 5) for v in vs] for k, vs in runs.items()},
    }
    print(
        f"  transformers {result['transformers_ms']:.1f} ms   llmrun {result['llmrun_ms']:.1f} ms   "
        f"x{result['ratio']:.2f}",
        flush=True,
    )
    return result


def run_child(args: list[str], timeout: float = 300) -> dict[str, Any]:
    """Run this script in a fresh process (``--child ...``); returns the JSON it prints last."""
    import torch

    threads = str(torch.get_num_threads())
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": threads}
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"child {args} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


class Children:
    """The measurements made in fresh processes (this script with ``--child``), by name.

    Each starts when first asked for. ``start_all`` starts them together, alongside the in-process
    measurements: ``--tiny`` does so to finish sooner, its timings being no figures anyway.
    """

    def __init__(self, folder: Path, s: Settings, pool: ThreadPoolExecutor) -> None:
        from llmrun.generation import GenerationConfig

        budget = GenerationConfig(max_new_tokens=s.typed_budget).budget(typed=True)
        batch, n = str(max(s.batches)), str(s.new_tokens)
        self.args = {
            "compile": ["compile", str(folder), str(budget)],
            "memory transformers": ["memory", str(folder), "transformers", batch, n],
            "memory llmrun": ["memory", str(folder), "llmrun", batch, n],
        }
        self.pool = pool
        self.jobs: dict[str, Future[dict[str, Any]]] = {}

    def start(self, *names: str) -> None:
        for name in names:
            if name not in self.jobs:
                self.jobs[name] = self.pool.submit(run_child, self.args[name])

    def start_all(self, skip: set[str]) -> None:
        self.start(*(name for name in self.args if name.split()[0] not in skip))

    def result(self, name: str) -> dict[str, Any]:
        self.start(name)
        return self.jobs[name].result()


def measure_compile(children: Children) -> dict[str, Any]:
    """(d): grammar compile times, in a fresh process so nothing is cached yet."""
    result = children.result("compile")
    print(
        f"  tokenizer setup (once per tokenizer) {result['tokenizer_setup_s'] * 1e3:.0f} ms   "
        f"first compile of Answer {result['first_compile_s'] * 1e3:.0f} ms   "
        f"cached {result['cached_s'] * 1e3:.3f} ms",
        flush=True,
    )
    return result


def measure_memory(children: Children, s: Settings) -> dict[str, Any]:
    """(f): peak RSS of each path in its own fresh process (the two run side by side: no timing)."""
    result: dict[str, Any] = {
        "method": "a fresh process per path: peak RSS (VmHWM, reset after the imports; else ru_maxrss) "
        "minus the RSS after the imports, for loading the checkpoint and one generation at batch "
        f"{max(s.batches)}, {s.new_tokens} new tokens",
        "batch": max(s.batches),
    }
    children.start("memory transformers", "memory llmrun")
    for path in ("transformers", "llmrun"):
        result[path] = children.result(f"memory {path}")
    result["ratio"] = round(result["llmrun"]["delta_mib"] / result["transformers"]["delta_mib"], 2)
    print(
        f"  transformers +{result['transformers']['delta_mib']:.0f} MiB   "
        f"llmrun +{result['llmrun']['delta_mib']:.0f} MiB   (x{result['ratio']:.2f})",
        flush=True,
    )
    return result


# ----------------------------------------------------------------------------- children


def _status_mib(field: str) -> float:
    """A ``VmRSS``/``VmHWM`` line of ``/proc/self/status``, in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 2**10
    raise RuntimeError(f"{field} is not in /proc/self/status")


def reset_peak_rss() -> str:
    """Start a new peak-RSS window; returns how the peak will be read (see :func:`peak_rss_mib`)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # Linux >= 4.0: resets VmHWM to the current RSS
        return "VmHWM"
    except OSError:
        return "ru_maxrss"


def peak_rss_mib(method: str) -> float:
    if method == "VmHWM":
        return _status_mib("VmHWM")
    import resource  # POSIX only

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if platform.system() == "Darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


def child_memory(folder: Path, path: str, batch: int, new_tokens: int) -> dict[str, Any]:
    """Peak RSS of loading ``folder`` and one generation, above the RSS after the imports."""
    # everything either path imports comes first, so the figure is the model's and the run's
    import transformers.generation.utils
    import transformers.models.gpt_neox.modeling_gpt_neox  # noqa: F401
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: F401

    import llmrun.backends.local.decode
    import llmrun.backends.local.runner  # noqa: F401

    method = reset_peak_rss()
    before = _status_mib("VmRSS")
    prompts = prompts_for(batch)
    if path == "transformers":
        PlainTransformers(folder).generate(prompts, new_tokens)
    else:
        load_runner(folder)(prompts, max_new_tokens=new_tokens)
    peak = peak_rss_mib(method)
    return {
        "peak_read_from": method,
        "rss_after_imports_mib": round(before, 1),
        "peak_mib": round(peak, 1),
        "delta_mib": round(peak - before, 1),
    }


def child_compile(folder: Path, budget: int) -> dict[str, Any]:
    from transformers import AutoConfig, AutoTokenizer

    from llmrun.backends.local import grammar
    from llmrun.schema import output_json_schema

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    vocab = int(AutoConfig.from_pretrained(str(folder)).vocab_size)
    schema = output_json_schema(Answer)

    def constraint() -> Any:
        return grammar.json_constraint(tokenizer, schema, 1, vocab, max_new_tokens=budget)

    setup_s, _ = timed(lambda: grammar.compile_json_grammar(tokenizer, {"type": "boolean"}, vocab))
    first_s, _ = timed(constraint)
    cached = [timed(constraint)[0] for _ in range(5)]
    return {
        "max_new_tokens": budget,
        "tokenizer_setup_s": round(setup_s, 4),
        "first_compile_s": round(first_s, 4),
        "first_typed_call_overhead_s": round(setup_s + first_s, 4),
        "cached_s": round(statistics.median(cached), 6),
        "note": "tokenizer_setup_s: xgrammar TokenizerInfo and token tables, once per tokenizer and "
        "process (timed with a trivial schema); first_compile_s: the first json_constraint for "
        "Answer (bounding the schema to the budget + compiling); cached_s: the same call again "
        "(median of 5)",
    }


# ----------------------------------------------------------------------------- main


def machine_info() -> dict[str, Any]:
    import torch
    import transformers

    return {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
        "load_avg_start": [round(x, 2) for x in os.getloadavg()],
    }


def run(s: Settings, skip: set[str]) -> dict[str, Any]:
    """Build the checkpoint, run every measurement; returns the JSON-ready results."""
    import torch  # noqa: F401  - loaded before the clock starts

    started = time.perf_counter()
    out: dict[str, Any] = {"benchmark": "generate", "machine": machine_info()}
    out["settings"] = {
        "batches": s.batches,
        "typed_batches": s.typed_batches,
        "new_tokens": s.new_tokens,
        "typed_max_new_tokens": s.typed_budget if s.typed_budget is not None else "runner default",
        "rounds": s.rounds,
        "typed_rounds": s.typed_rounds,
        "quiet_wait_s": s.quiet_wait_s,
        "statistic": "median of rounds",
    }
    phases: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="llmrun-bench-") as tmp, ThreadPoolExecutor(3) as pool:
        folder = Path(tmp) / "checkpoint"
        out["model"] = build_benchmark_checkpoint(folder, s.tiny)
        print(f"{out['model']['model']}, float32; tokenizer: {out['model']['tokenizer']}", flush=True)
        children = Children(folder, s, pool)
        if s.tiny:
            children.start_all(skip)
        plain, runner, int8 = PlainTransformers(folder), load_runner(folder), load_runner(folder, "int8")
        out["model"]["parameters"] = sum(p.numel() for p in plain.model.parameters())
        out["model"]["llmrun_decode_path"] = runner.engine.prepared.path
        phases["setup"] = time.perf_counter() - started
        steps: list[tuple[str, str, str, Callable[[], Any]]] = [
            ("throughput", "throughput", f"throughput, {s.new_tokens} new tokens, greedy:",
             lambda: measure_throughput(plain, runner, int8, s)),
            ("int8", "int8_numerics", "int8 numerics against float32 (the opt-in quantize='int8'):",
             lambda: measure_int8_numerics(runner, int8, s)),
            ("typed", "typed", "typed (Answer: str, float, Literal, list[str]) vs untyped, per token:",
             lambda: measure_typed(runner, s)),
            ("compile", "grammar_compile", "grammar compile (fresh process):",
             lambda: measure_compile(children)),
            ("ttft", "ttft", "time to first text piece, streaming, batch 1:",
             lambda: measure_ttft(plain, runner, s)),
            ("memory", "memory", "peak memory (a fresh process per path):",
             lambda: measure_memory(children, s)),
        ]  # fmt: skip
        for name, key, title, measure in steps:
            if name in skip:
                continue
            print(title, flush=True)
            t0 = time.perf_counter()
            out[key] = measure()
            phases[name] = time.perf_counter() - t0
    out["phase_s"] = {k: round(v, 1) for k, v in phases.items()}
    out["machine"]["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    out["elapsed_s"] = round(time.perf_counter() - started, 1)
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=None, help="default: 1 8 32")
    parser.add_argument("--typed-batches", type=int, nargs="+", default=None, help="default: 1 16")
    parser.add_argument("--new-tokens", type=int, default=None, help="default: 64")
    parser.add_argument(
        "--typed-tokens", type=int, default=None, help="typed calls' max_new_tokens (default: the runner's)"
    )
    parser.add_argument("--rounds", type=int, default=None, help="default: 5 (--quick: 3, --tiny: 1)")
    parser.add_argument(
        "--typed-rounds",
        type=int,
        default=None,
        help="rounds of the typed comparison (default: 3, --quick: 2)",
    )
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=None,
        help="before each round, wait up to this many seconds for other processes to leave the CPU "
        "(default 30; --tiny: 0)",
    )
    parser.add_argument("--tiny", action="store_true", help="a tiny model and few tokens: a smoke run")
    parser.add_argument(
        "--skip",
        nargs="+",
        default=[],
        choices=["throughput", "int8", "typed", "compile", "ttft", "memory"],
        help="leave these measurements out",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's; --tiny: 1)"
    )
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"default: {DEFAULT_JSON}")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights" bars, once per load
    if args.child:
        kind, folder, *rest = args.child
        if kind == "compile":
            result = child_compile(Path(folder), int(rest[0]))
        else:
            result = child_memory(Path(folder), rest[0], int(rest[1]), int(rest[2]))
        print(json.dumps(result))
        return 0
    tiny = args.tiny
    threads = args.threads if args.threads is not None else 1 if tiny else None
    if threads is not None:  # --tiny: one thread, as two busy-wait each other on a loaded machine
        import torch

        torch.set_num_threads(threads)
    settings = Settings(
        batches=args.batches or ([1, 4] if tiny else [1, 8, 32]),
        typed_batches=args.typed_batches or ([1, 4] if tiny else [1, 16]),
        new_tokens=args.new_tokens or (16 if tiny else 64),
        typed_budget=args.typed_tokens,
        rounds=args.rounds or (1 if tiny else 3 if args.quick else 5),
        typed_rounds=args.typed_rounds or (1 if tiny else 2 if args.quick else 3),
        quiet_wait_s=args.quiet_wait if args.quiet_wait is not None else 0.0 if tiny else 30.0,
        tiny=tiny,
    )
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    result = run(settings, set(args.skip))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json} ({result['elapsed_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
