"""The offline stand-in of the README's demo, and the ``llmrun.toml`` that lets a plain shell use it.

Where the Hugging Face hub cannot be reached, ``nox -s demo`` lays out
``EleutherAI/pythia-70m`` (the real architecture and tokenizer, random weights)
in ``.cache/hub`` of the checkout and writes ``llmrun.toml`` there::

    [local]
    cache_dir = "/path/to/checkout/.cache/hub"
    offline = true

so that ``llmrun run EleutherAI/pythia-70m "..."``, run from the checkout in a
plain shell, finds the same model without environment variables and without
trying the network. The file says it was written by the demo; delete it to use
the hub. An ``llmrun.toml`` that the demo did not write is never touched.

Run as ``python -m llmrun.testing.demo prepare --root . --tokenizer PATH``.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from llmrun.errors import ConfigurationError, LLMRunError

#: First line of an ``llmrun.toml`` written by the demo; only such a file is rewritten.
MARKER = "# written by `nox -s demo`"
HUB_HOST = "huggingface.co"


def hub_reachable(host: str = HUB_HOST, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the hub opens within ``timeout`` seconds (name lookup included)."""
    result: list[bool] = []

    def attempt() -> None:
        try:
            with socket.create_connection((host, 443), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    worker = threading.Thread(target=attempt, daemon=True)  # a stuck DNS lookup ignores socket timeouts
    worker.start()
    worker.join(timeout)
    return bool(result and result[0])


def demo_config_text(cache: Path) -> str:
    """The ``llmrun.toml`` pointing the local backend at the demo's offline cache."""
    return (
        f"{MARKER}: the local backend loads its offline EleutherAI/pythia-70m\n"
        "# (real architecture and tokenizer, random weights, so the output is noise).\n"
        "# Delete this file to load models from the Hugging Face hub again.\n"
        "[local]\n"
        f'cache_dir = "{cache.resolve().as_posix()}"\n'
        "offline = true\n"
    )


def write_demo_config(root: Path, cache: Path) -> Path:
    """Write ``root/llmrun.toml`` for the demo's cache, unless a file the demo did not write is there."""
    path = root / "llmrun.toml"
    if path.exists() and not path.read_text(encoding="utf-8", errors="replace").startswith(MARKER):
        raise ConfigurationError(
            f"{path} exists and was not written by the demo; it is left alone. To run the demo's model, "
            f'add to it: [local] cache_dir = "{cache.resolve().as_posix()}" and offline = true'
        )
    path.write_text(demo_config_text(cache), encoding="utf-8")
    return path


def prepare(root: Path, tokenizer: Path) -> Path:
    """Install the offline pythia-70m under ``root/.cache/hub`` and write the demo's ``llmrun.toml``."""
    if not tokenizer.is_file():
        raise ConfigurationError(
            f"the Hugging Face hub is not reachable, so the demo needs its offline stand-in, which is built "
            f"from pythia's tokenizer file {tokenizer}: that file is missing. Put the tokenizer.json of "
            "EleutherAI/pythia-70m (or EleutherAI/gpt-neox-20b) there, or run the demo where huggingface.co "
            "is reachable so the real model is downloaded"
        )
    from llmrun.testing.checkpoints import install_demo_pythia

    cache = root / ".cache" / "hub"
    install_demo_pythia(cache, tokenizer)
    return write_demo_config(root, cache)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m llmrun.testing.demo", description=__doc__.splitlines()[0]
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser(
        "prepare", help="offline stand-in and llmrun.toml, where the hub is unreachable"
    )
    run.add_argument("--root", type=Path, required=True, help="the checkout (where llmrun.toml goes)")
    run.add_argument("--tokenizer", type=Path, required=True, help="pythia's tokenizer.json")
    run.add_argument(
        "--force-offline", action="store_true", help="build the stand-in even if the hub answers"
    )
    args = parser.parse_args(argv)
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    if not (args.force_offline or offline) and hub_reachable():
        print(f"{HUB_HOST} is reachable: the demo downloads the real EleutherAI/pythia-70m")
        return 0
    try:
        print(f"wrote {prepare(args.root, args.tokenizer)}")
    except LLMRunError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
