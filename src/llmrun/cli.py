"""The ``llmrun`` command line.

llmrun run EleutherAI/pythia-70m "Question: What is the highest mountain in the world? Answer:"
echo "Once upon a time" | llmrun run EleutherAI/pythia-70m --max-new-tokens 20
llmrun run EleutherAI/pythia-70m --file prompts.txt --json
llmrun train EleutherAI/pythia-70m qa.jsonl --input-key question --output-key answer
llmrun eval llmrun-runs/pythia-70m-20260101-120000 qa.jsonl --input-key question --output-key answer
llmrun batch EleutherAI/pythia-70m rows.jsonl --output out.parquet --output-type app:Answer --ray
llmrun serve EleutherAI/pythia-70m --port 8000 --api-key "$KEY"
llmrun serve EleutherAI/pythia-70m --port 8000 --replicas 2          (Ray Serve, one engine per replica)
llmrun backends
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llmrun.__about__ import __version__
from llmrun.errors import ConfigurationError, InvalidInputError, LLMRunError

_EPILOG = """examples:
  llmrun run EleutherAI/pythia-70m "Question: What is the highest mountain in the world? Answer:"
  llmrun run ./my-checkpoint "Hello" --device cpu --max-new-tokens 20
  echo "Once upon a time" | llmrun run EleutherAI/pythia-70m
  llmrun run EleutherAI/pythia-70m --file prompts.txt --json      (one prompt per line)
  llmrun run meta-llama/Llama-2-7b-hf "Hi" --backend lamini          (key: LAMINI_API_KEY)
  llmrun train EleutherAI/pythia-70m qa.jsonl --input-key question --output-key answer

settings also come from LLMRUN_* environment variables and llmrun.toml; see the docs."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``llmrun`` command."""
    parser = argparse.ArgumentParser(
        prog="llmrun",
        description="Run large language models locally (CPU/GPU) or on Lamini, behind one interface.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"llmrun {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="generate text for one or more prompts",
        description="Generate a completion for each prompt and print it.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("model", help="hub id (e.g. EleutherAI/pythia-70m) or a local checkpoint folder")
    run.add_argument("prompts", nargs="*", help="prompts; none (or '-') reads one prompt from stdin")
    run.add_argument("--file", type=Path, help="read prompts from this file, one per line")
    run.add_argument("--backend", help="local (default), lamini, fake, or an installed plugin")
    run.add_argument("--device", help="local backend: auto (default), cpu, cuda, cuda:N")
    run.add_argument("--dtype", help="local backend: auto (default), float32, bfloat16, float16")
    run.add_argument("--quantize", help="local backend: none (default) or int8 (CPU, approximate)")
    run.add_argument("--threads", type=int, help="local backend: CPU threads (default: the free cores)")
    run.add_argument("--max-new-tokens", type=int, help="most tokens to generate per prompt (default 128)")
    run.add_argument("--temperature", type=float, help="0 (default) is greedy and deterministic")
    run.add_argument("--top-p", type=float, help="nucleus sampling, in (0, 1]")
    run.add_argument("--top-k", type=int, help="sample from the k most likely tokens")
    run.add_argument("--repetition-penalty", type=float, help="above 1.0 discourages repeats (default 1.0)")
    run.add_argument("--seed", type=int, help="random seed for sampling")
    run.add_argument("--stop", action="append", help="stop sequence (repeatable)")
    run.add_argument("--json", action="store_true", help="print one JSON object per prompt")

    train = commands.add_parser(
        "train",
        help="fine-tune a model on a JSON-lines or CSV file",
        description="Fine-tune MODEL on DATA (JSON lines or CSV with a header), then evaluate it.",
    )
    _data_arguments(train)
    train.add_argument("--epochs", type=int, help="passes over the data (default 3)")
    train.add_argument("--max-steps", type=int, help="stop after this many optimizer steps")
    train.add_argument("--learning-rate", type=float, help="default 5e-5 (full) or 2e-4 (LoRA)")
    train.add_argument("--batch-size", type=int, help="examples per step (default 8)")
    train.add_argument("--lora", action="store_true", help="train a LoRA adapter instead of every weight")
    train.add_argument("--resume", action="store_true", help="continue the newest run of this model")
    train.add_argument("--runs-dir", help="local backend: where run directories go (default llmrun-runs)")

    evaluate = commands.add_parser(
        "eval",
        help="evaluate a model on the held-out part of a data file",
        description="Held-out loss, perplexity, exact match and sample outputs of MODEL on DATA.",
    )
    _data_arguments(evaluate)

    serve = commands.add_parser(
        "serve",
        help="serve a local model on the Lamini and OpenAI wires",
        description="Serve MODEL over HTTP: Lamini's and OpenAI's completions APIs with dynamic batching. "
        "Settings also come from LLMRUN_SERVE_* and the [serve] table of llmrun.toml.",
    )
    serve.add_argument("model", help="hub id (e.g. EleutherAI/pythia-70m) or a local checkpoint folder")
    serve.add_argument("--host", help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, help="port (default 8000; 0 picks a free one)")
    serve.add_argument("--device", help="auto (default), cpu, cuda, cuda:N")
    serve.add_argument("--dtype", help="auto (default), float32, bfloat16, float16")
    serve.add_argument("--quantize", help="none (default) or int8 (CPU, approximate)")
    serve.add_argument("--api-key", help="require 'Authorization: Bearer KEY' (or set LLMRUN_SERVE_API_KEY)")
    serve.add_argument("--max-batch-size", type=int, help="rows decoded together (default 32)")
    serve.add_argument("--max-queue", type=int, help="rows waiting or running before 429 (default 256)")
    serve.add_argument("--timeout", type=float, help="seconds a request may take (default 300)")
    serve.add_argument("--model-name", help="the name clients use (default: MODEL)")
    serve.add_argument(
        "--chat-template", help="'plain' or a Jinja file: chat for a model whose tokenizer has no template"
    )
    serve.add_argument("--replicas", type=int, help="serve N replicas on Ray Serve, one engine each")
    serve.add_argument(
        "--autoscaling",
        metavar="JSON",
        help='Ray Serve autoscaling instead of --replicas, e.g. \'{"min_replicas": 1, "max_replicas": 4}\'',
    )
    serve.add_argument(
        "--ray", metavar="ADDRESS", help="with --replicas: a running Ray cluster (default: new)"
    )
    serve.add_argument("--cpus-per-replica", type=float, default=1, help="with --replicas: CPUs each (1)")
    serve.add_argument("--gpus-per-replica", type=float, default=0, help="with --replicas: GPUs each (0)")

    from llmrun.batch.cli import add_batch_command

    add_batch_command(commands)
    commands.add_parser("backends", help="list the available backends")
    return parser


def _data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="hub id, local checkpoint or run folder, or a Lamini model name")
    parser.add_argument("data", type=Path, help="training data: .jsonl (one object per line) or .csv")
    parser.add_argument("--input-key", default="input", help="field holding the prompt (default: input)")
    parser.add_argument("--output-key", default="output", help="field holding the answer (default: output)")
    parser.add_argument("--backend", help="local (default), lamini, or an installed plugin")
    parser.add_argument("--device", help="local backend: auto (default), cpu, cuda, cuda:N")
    parser.add_argument("--threads", type=int, help="local backend: CPU threads (default: the free cores)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``llmrun`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        if args.command == "backends":
            from llmrun.registry import available_backends

            print("\n".join(available_backends()))
            return 0
        if args.command in ("train", "eval"):
            return _train_or_eval(args)
        if args.command == "batch":
            from llmrun.batch.cli import run_batch_command

            return run_batch_command(args)
        if args.command == "serve":
            return _serve(args)
        return _run(args)
    except LLMRunError as exc:
        print(f"llmrun: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("llmrun: interrupted", file=sys.stderr)
        return 130


def _flag(name: str) -> str:
    """The command-line flag of an option: ``max_new_tokens`` -> ``--max-new-tokens``."""
    return "--" + name.replace("_", "-")


def _load(args: argparse.Namespace, options: dict[str, Any]) -> Any:
    """Build the runner; settings errors name this command's flags."""
    from llmrun.registry import build_runner

    return build_runner(args.model, args.backend, options, argument_label=_flag)


def _backend_options(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    chosen = {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
    if chosen.get("threads", 1) < 1:
        raise InvalidInputError(f"--threads {chosen['threads']} is invalid: use a positive number of threads")
    return chosen


def _run(args: argparse.Namespace) -> int:
    from llmrun.generation import option_problem

    prompts = _read_prompts(args.prompts, args.file)
    overrides = {
        "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "top_k": args.top_k,
        "repetition_penalty": args.repetition_penalty,
        "seed": args.seed,
        "stop": tuple(args.stop) if args.stop else None,
    }
    for name, value in overrides.items():  # checked before a model takes seconds to load
        problem = None if value is None else option_problem(name, value)
        if problem:
            shown = " ".join(value) if isinstance(value, tuple) else value
            raise InvalidInputError(f"{_flag(name)} {shown} is invalid: {problem}")
    runner = _load(args, _backend_options(args, "device", "dtype", "quantize", "threads"))
    outputs = runner.generate(prompts, **overrides)
    for prompt, output in zip(prompts, outputs, strict=True):
        if args.json:
            print(json.dumps({"prompt": prompt, "output": output}, ensure_ascii=False))
        else:
            print(output)
    return 0


def _serve(args: argparse.Namespace) -> int:
    from llmrun.serve import ServeSettings, serve

    settings = ServeSettings.resolve(
        {
            "host": args.host,
            "port": args.port,
            "api_key": args.api_key,
            "max_batch_size": args.max_batch_size,
            "max_queue": args.max_queue,
            "timeout_s": args.timeout,
            "model_name": args.model_name,
            "chat_template": args.chat_template,
        }
    )
    local = (("device", args.device), ("dtype", args.dtype), ("quantize", args.quantize))
    load_options = {k: v for k, v in local if v}
    if args.replicas is not None or args.autoscaling is not None or args.ray is not None:
        from llmrun.serve.ray_serve import serve_replicated

        serve_replicated(
            args.model,
            settings,
            address=args.ray,
            replicas=1 if args.replicas is None else args.replicas,
            autoscaling=_json_option("--autoscaling", args.autoscaling),
            cpus_per_replica=args.cpus_per_replica,
            gpus_per_replica=args.gpus_per_replica,
            **load_options,
        )
        return 0
    try:
        serve(args.model, settings, **load_options)
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C after its graceful shutdown
        print("llmrun serve: stopped", file=sys.stderr)
    return 0


def _json_option(name: str, text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise InvalidInputError(f"{name} must be JSON, e.g. '{{\"max_replicas\": 4}}': {exc}") from None


def _train_options(args: argparse.Namespace) -> dict[str, Any]:
    """The training flags given, checked one by one so an error names its flag."""
    from llmrun.training import TrainOptions

    given = {
        "epochs": args.epochs,
        "max_steps": args.max_steps,
        "learning_rate": args.learning_rate,
        "batch_size": args.batch_size,
    }
    chosen = {k: v for k, v in given.items() if v is not None}
    for name, value in chosen.items():
        try:
            TrainOptions.from_kwargs(**{name: value})
        except ConfigurationError as exc:
            raise ConfigurationError(
                str(exc).replace(f"training option {name}=", f"{_flag(name)} ")
            ) from None
    if args.lora:
        chosen["method"] = "lora"
    if args.resume:
        chosen["resume"] = True
    return chosen


def _train_or_eval(args: argparse.Namespace) -> int:
    suffix = args.data.suffix.lower()
    if suffix not in (".jsonl", ".json", ".ndjson", ".csv"):
        raise InvalidInputError(f"{args.data}: use a .jsonl (one JSON object per line) or .csv file")
    if not args.data.is_file():
        raise InvalidInputError(f"data file {args.data} does not exist; check the path")
    chosen = _train_options(args) if args.command == "train" else {}
    from llmrun.compat.engines import BasicModelRunner  # the 2023 facade holds the training data

    options = _backend_options(args, "device", "threads", "runs_dir")
    runner = BasicModelRunner(args.model, backend=args.backend, **options)
    if suffix == ".csv":
        runner.load_data_from_csv(args.data, input_key=args.input_key, output_key=args.output_key)
    else:
        runner.load_data_from_jsonlines(args.data, input_key=args.input_key, output_key=args.output_key)
    if args.command == "eval":
        report = runner.evaluate()
        print(json.dumps(report.to_dict(), indent=2) if args.json else report)
        return 0
    result = runner.train(**chosen)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(f"trained: {result.model_name}")
        if result.run_dir is not None:
            print(f"run directory: {result.run_dir}")
        if result.job_id is not None:
            print(f"job: {result.job_id}")
        if result.eval is not None:
            print(result.eval)
    return 0


def _read_prompts(given: list[str], file: Path | None) -> list[str]:
    if file is not None:
        if given:
            raise InvalidInputError("give prompts either as arguments or with --file, not both")
        try:
            lines = file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInputError(f"cannot read prompts from {file}: {exc}") from None
        prompts = [line for line in lines if line.strip()]
        if not prompts:
            raise InvalidInputError(f"{file} holds no prompts; write one prompt per line")
        return prompts
    if not given or given == ["-"]:
        if sys.stdin is None or sys.stdin.isatty():
            raise InvalidInputError("no prompt given: pass it as an argument, with --file, or on stdin")
        text = sys.stdin.read().strip()
        if not text:
            raise InvalidInputError("stdin was empty; pass a prompt as an argument or pipe one in")
        return [text]
    return list(given)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
