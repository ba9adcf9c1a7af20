"""Developer sessions: tests, lint, typecheck, docs, bench, demo.

``nox -s tests`` is what CI runs. torch is pinned to the CPU build that the
test machines carry; an unpinned torch would pull a multi-GB CUDA build.
"""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.sessions = ["tests", "lint", "typecheck", "docs"]
nox.options.reuse_existing_virtualenvs = True

TORCH = "torch==2.13.0"
ROOT = Path(__file__).parent
PYTHIA_TOKENIZER = ROOT.parent / "shared" / "assets" / "tokenizers" / "pythia" / "tokenizer.json"


def install_dev(session: nox.Session) -> None:
    session.install(TORCH)
    session.install("-e", ".[dev]")


@nox.session(python="3.11")
def tests(session: nox.Session) -> None:
    """The test suite (offline; builds its own tiny models)."""
    install_dev(session)
    session.run("pytest", *session.posargs, env={"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})


@nox.session(python="3.11")
def ray(session: nox.Session) -> None:
    """Batch and serving on a local Ray cluster, at full size: 200 typed rows over 2 actors (~5 min)."""
    install_dev(session)
    env = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "LLMRUN_RAY_TEST_ROWS": "200"}
    tests = ["tests/test_batch_ray.py", "tests/test_batch.py", "tests/test_serve_ray.py"]
    session.run("pytest", *tests, *session.posargs, env=env)


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    """ruff lint and format check."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python="3.11")
def typecheck(session: nox.Session) -> None:
    """mypy --strict on src/."""
    install_dev(session)
    session.run("mypy")


@nox.session(python="3.11")
def docs(session: nox.Session) -> None:
    """Build the documentation site strictly (warnings are errors)."""
    install_dev(session)
    session.run("mkdocs", "build", "--strict", "--site-dir", str(ROOT / "site"))


@nox.session(python="3.11")
def bench(session: nox.Session) -> None:
    """Speed benchmarks against plain transformers; writes JSON and a plot to benchmarks/results/."""
    install_dev(session)
    session.run("python", "benchmarks/run_all.py", *session.posargs)


@nox.session(python="3.11", name="bench-schemas")
def bench_schemas(session: nox.Session) -> None:
    """Coverage of real-world JSON Schemas (the JSONSchemaBench sample in ../shared/assets)."""
    install_dev(session)
    session.run("python", "benchmarks/bench_schemas.py", *session.posargs)


@nox.session(name="bench-peers", python="3.11")
def bench_peers(session: nox.Session) -> None:
    """llmrun against transformers, CTranslate2 and llama.cpp (benchmarks/bench_peers.py; ~7 min).

    The peers are installed here, not as llmrun dependencies; llama-cpp-python compiles from source
    (a few minutes, once) with the CPU's own instruction set, at low priority.
    """
    install_dev(session)
    session.install("ctranslate2>=4.5", "gguf>=0.10")
    env = {"CMAKE_ARGS": "-DGGML_NATIVE=ON -DLLAVA_BUILD=OFF", "CMAKE_BUILD_PARALLEL_LEVEL": "2"}
    pip = ("nice", "-n", "19", "python", "-m", "pip", "install", "llama-cpp-python>=0.3")
    try:
        session.run(*pip, env=env, external=True)
    except nox.command.CommandFailed:  # the benchmark then skips llama.cpp and says why
        session.warn("llama-cpp-python did not build; the benchmark will skip llama.cpp")
    session.run("python", "benchmarks/bench_peers.py", *session.posargs)


@nox.session(python="3.11")
def demo(session: nox.Session) -> None:
    """The seed's quickstart: pythia-70m answers the mountain question on the CPU.

    Where the hub is unreachable, the pythia-70m architecture with random weights
    and the real tokenizer (from ../shared/assets) is laid out as a cached model in
    .cache/hub, and llmrun.toml points the local backend there (offline), so the
    README's `llmrun run ...` finds it from a plain shell too. Without the tokenizer
    file the session stops with an error naming it.
    """
    session.install(TORCH)
    session.install("-e", ".[local]")
    session.run(
        "python", "-m", "llmrun.testing.demo", "prepare",
        "--root", str(ROOT), "--tokenizer", str(PYTHIA_TOKENIZER),
    )  # fmt: skip
    session.run(
        "llmrun", "run", "EleutherAI/pythia-70m",
        "Question: What is the highest mountain in the world? Answer:",
        "--max-new-tokens", "20",
    )  # fmt: skip
