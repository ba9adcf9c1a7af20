"""Training throughput: llmrun's local loop vs a plain transformers ``Trainer``, same data, same run.

The model is the pythia-70m architecture (GPTNeoX: 6 layers, hidden 512, 8 heads, intermediate
2048, rotary_pct 0.25, vocab 50,304) with random weights — speed does not depend on the values.
The tokenizer is pythia's real one when ``/work/shared/assets/tokenizers/pythia/tokenizer.json``
(or ``--tokenizer``) exists, else a small byte-level BPE trained on the spot.

Both loops train on the same encoded QA pairs (prompt masked out of the loss, right padding to
the longest sequence of each batch, AdamW, linear schedule, grad-norm clipping) with the same
batch size and step count. Throughput is non-padding tokens per second of training time
(llmrun: ``metrics["train_seconds"]``; Trainer: its ``train_runtime``); checkpoint saving and
evaluation are off or excluded for both. Each configuration runs ``--repeats`` times, alternating
the two loops so a busy machine slows both alike, after one untimed warm-up of each; the median
is reported.

    python benchmarks/bench_training.py            # float32 and bf16 autocast, CPU or CUDA
    python benchmarks/bench_training.py --steps 20 --batch-size 16 --precision fp32
"""

from __future__ import annotations

import argparse
import copy
import logging
import random
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from llmrun.backends.local.batching import EncodedExample, collate, encode_examples
from llmrun.backends.local.engine import LocalEngine
from llmrun.backends.local.training import train_local
from llmrun.data import load_examples
from llmrun.testing.checkpoints import (
    load_pythia_tokenizer,
    pythia_70m_config,
    train_byte_level_bpe_tokenizer,
)
from llmrun.training import TrainingExample, TrainOptions

PYTHIA_TOKENIZER = Path("/work/shared/assets/tokenizers/pythia/tokenizer.json")
LEARNING_RATE = 5e-5

_SUBJECTS = [
    "the river",
    "a mountain",
    "the old library",
    "my neighbour's cat",
    "the red planet",
    "a violin",
    "the northern lights",
    "a steam engine",
    "the city council",
    "an ancient map",
    "the ocean floor",
    "a honey bee",
    "the printing press",
    "a glacier",
    "the desert wind",
    "a lighthouse keeper",
]
_ASKS = [
    "What is special about",
    "Why do people talk about",
    "How would you describe",
    "Where can I find",
    "When did scientists first study",
    "Who is most interested in",
]
_FACTS = [
    "it is older than most people think",
    "it changes with the seasons",
    "it was first described in a book from the eighteenth century",
    "many visitors come to see it every summer",
    "it is hard to measure precisely",
    "it inspired songs, paintings and at least one famous novel",
]


def cpu_has_native_bf16() -> bool:
    checks = [
        getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    ]
    return any(bool(check()) for check in checks if callable(check))


def make_examples(n: int, seed: int = 0) -> list[TrainingExample]:
    """``n`` synthetic QA pairs of varied length (about 15-70 tokens each)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        question = f"Question: {rng.choice(_ASKS)} {rng.choice(_SUBJECTS)}? Answer:"
        answer = ". ".join(rng.sample(_FACTS, rng.randint(1, 3))).capitalize() + "."
        rows.append({"input": question, "output": answer})
    return load_examples(rows)


def build_model(device: torch.device) -> Any:
    from transformers import GPTNeoXForCausalLM

    config = pythia_70m_config()
    config.dtype = torch.float32
    torch.manual_seed(0)
    return GPTNeoXForCausalLM(config).to(device=device, dtype=torch.float32)


def load_tokenizer(path: Path) -> tuple[Any, str]:
    if path.is_file():
        return load_pythia_tokenizer(path), f"pythia ({path})"
    return train_byte_level_bpe_tokenizer(4096), "byte-level BPE trained on the spot (pythia's not found)"


def run_llmrun(
    base: Any, tokenizer: Any, examples: list[TrainingExample], steps: int, batch_size: int, bf16: bool
) -> float:
    model = copy.deepcopy(base)
    options = TrainOptions(
        method="full",
        max_steps=steps,
        batch_size=batch_size,
        learning_rate=LEARNING_RATE,
        warmup_ratio=0.0,
        eval_fraction=0.0,
        bf16=bf16,
        save_every_steps=10**9,
        log_every_steps=10**9,
        max_length=256,
    )
    with tempfile.TemporaryDirectory() as tmp:
        engine = LocalEngine(model, tokenizer)
        result = train_local(engine, examples, options, Path(tmp) / "run", progress=False)
    return result.metrics["train_tokens"] / result.metrics["train_seconds"]


class _Encoded(torch.utils.data.Dataset[EncodedExample]):
    def __init__(self, items: list[EncodedExample]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> EncodedExample:
        return self.items[i]


def run_trainer(
    base: Any,
    encoded: list[EncodedExample],
    pad: int,
    steps: int,
    batch_size: int,
    bf16: bool,
    device: torch.device,
) -> float:
    from transformers import PrinterCallback, Trainer, TrainingArguments

    model = copy.deepcopy(base)
    counted = {"tokens": 0}

    def collator(items: list[EncodedExample]) -> dict[str, torch.Tensor]:
        batch = collate(items, pad)  # the same right padding and prompt masking as llmrun's loop
        counted["tokens"] += batch.num_tokens
        return {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask, "labels": batch.labels}

    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp,
            max_steps=steps,
            per_device_train_batch_size=batch_size,
            learning_rate=LEARNING_RATE,
            lr_scheduler_type="linear",
            warmup_steps=0,
            max_grad_norm=1.0,
            bf16=bf16,
            save_strategy="no",
            eval_strategy="no",
            logging_strategy="no",
            report_to=[],
            disable_tqdm=True,
            dataloader_num_workers=0,
            remove_unused_columns=False,
            use_cpu=device.type == "cpu",
            seed=42,
        )
        trainer = Trainer(model=model, args=args, train_dataset=_Encoded(encoded), data_collator=collator)
        trainer.remove_callback(PrinterCallback)
        output = trainer.train()
    return counted["tokens"] / float(output.metrics["train_runtime"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=6, help="optimizer steps per timed run (default 6)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed runs per loop and precision (default 3)"
    )
    parser.add_argument("--precision", choices=["fp32", "bf16", "both"], default="both")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tokenizer", type=Path, default=PYTHIA_TOKENIZER)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    logging.getLogger("llmrun").setLevel(logging.WARNING)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    device = torch.device(args.device)
    tokenizer, tok_name = load_tokenizer(args.tokenizer)
    examples = make_examples(args.steps * args.batch_size)
    encoded = encode_examples(tokenizer, examples, 256)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    base = build_model(device)
    lengths = [len(e.input_ids) for e in encoded]
    print(f"device: {device} ({torch.get_num_threads()} CPU threads); torch {torch.__version__}")
    n_params = sum(p.numel() for p in base.parameters()) / 1e6
    print(f"model: pythia-70m architecture, random weights, {n_params:.1f}M parameters")
    print(f"tokenizer: {tok_name}")
    print(
        f"data: {len(examples)} QA pairs, {min(lengths)}-{max(lengths)} tokens "
        f"(mean {statistics.mean(lengths):.0f}), "
        f"completion share {sum(e.num_targets for e in encoded) / sum(lengths):.0%}; "
        f"{args.steps} steps x batch {args.batch_size}; median of {args.repeats}"
    )
    precisions = ["fp32", "bf16"] if args.precision == "both" else [args.precision]
    if args.precision == "both" and device.type == "cpu" and not cpu_has_native_bf16():
        precisions = ["fp32"]
        print(
            "bf16: skipped, this CPU has no AVX512-BF16/AMX and bf16 autocast is emulated (about 40x slower "
            "backward measured here); pass --precision bf16 to time it anyway"
        )
    started = time.perf_counter()
    results: dict[str, tuple[float, float]] = {}
    for precision in precisions:
        bf16 = precision == "bf16"
        ours_runs, trainer_runs = [], []
        run_llmrun(base, tokenizer, examples, 2, args.batch_size, bf16)  # warm-up, untimed
        run_trainer(base, encoded, pad, 2, args.batch_size, bf16, device)
        for _ in range(args.repeats):
            ours_runs.append(run_llmrun(base, tokenizer, examples, args.steps, args.batch_size, bf16))
            trainer_runs.append(run_trainer(base, encoded, pad, args.steps, args.batch_size, bf16, device))
        ours, theirs = statistics.median(ours_runs), statistics.median(trainer_runs)
        results[precision] = (ours, theirs)
        print(
            f"{precision:>5}: llmrun {ours:8.0f} tok/s | Trainer {theirs:8.0f} tok/s | "
            f"ratio {ours / theirs:.2f}x   (runs: llmrun {', '.join(f'{r:.0f}' for r in ours_runs)}; "
            f"Trainer {', '.join(f'{r:.0f}' for r in trainer_runs)})"
        )
    if len(results) == 2:
        print(
            f"bf16 autocast vs float32: llmrun {results['bf16'][0] / results['fp32'][0]:.2f}x, "
            f"Trainer {results['bf16'][1] / results['fp32'][1]:.2f}x"
        )
    print(f"total time {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
