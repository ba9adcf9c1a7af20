"""The docs say what the code does: commands parse, the API reference covers the public pieces."""

from __future__ import annotations

import importlib.util
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import llmrun
from llmrun.cli import build_parser
from llmrun.errors import SchemaError

ROOT = Path(__file__).resolve().parent.parent
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def _shell_lines() -> list[tuple[str, str]]:
    found = []
    for path in DOC_FILES:
        for block in re.findall(r"```bash\n(.*?)```", path.read_text(encoding="utf-8"), flags=re.S):
            block = re.sub(r"\\\n\s*", " ", block)  # join continued lines
            for line in block.splitlines():
                line = line.split(" #")[0].strip()
                if line.startswith("llmrun "):
                    found.append((path.name, line))
    return found


@pytest.mark.parametrize(("where", "line"), _shell_lines())
def test_documented_commands_parse(where: str, line: str) -> None:
    argv = shlex.split(line)[1:]
    if argv in (["--version"], ["--help"]):  # these print and exit
        with pytest.raises(SystemExit, match="0"):
            build_parser().parse_args(argv)
        return
    args = build_parser().parse_args(argv)  # exits with status 2 (fails the test) on an unknown flag
    if args.command in ("train", "eval") and str(args.data).startswith("qa."):
        # the docs' qa.jsonl holds {"question": ..., "answer": ...}
        assert (args.input_key, args.output_key) == ("question", "answer"), f"{where}: {line}"


def test_dir_lists_the_lazy_names() -> None:
    listed = dir(llmrun)
    for name in llmrun.__all__:
        assert name in listed, name
    code = "import sys, llmrun; names = dir(llmrun); print('load' in names, 'torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["True", "False"]  # listed, and dir() imports nothing heavy


def test_api_reference_covers_the_public_pieces() -> None:
    api = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    for target in (
        "llmrun.backends.lamini.runner.LaminiRunner",
        "llmrun.testing.lamini_server.FakeLaminiServer",
        "llmrun.testing.fixtures",
        "llmrun.testing.checkpoints",
        "llmrun.backends.local.checkpointing",
        "llmrun.training.TrainResult",
        "llmrun.training.EvalResult",
        "llmrun.training.TrainOptions",
    ):
        assert f"::: {target}\n" in api, target
    mkdocs = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    assert "merge_init_into_class: true" in mkdocs  # constructor parameters in the class signature
    assert "mkdocs_hooks.py" in mkdocs


def test_sphinx_roles_are_rendered_as_names() -> None:
    spec = importlib.util.spec_from_file_location("mkdocs_hooks", ROOT / "mkdocs_hooks.py")
    assert spec is not None
    assert spec.loader is not None
    hooks: Any = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    html = "see :class:<code>~llmrun.errors.ConfigurationError</code> and :func:<code>llmrun.load</code>"
    assert (
        hooks.strip_sphinx_roles(html) == "see <code>ConfigurationError</code> and <code>llmrun.load</code>"
    )


def test_typed_guide_claims() -> None:
    """typed.md: Any fails at class definition; recursion at output_type (see test_bad_input)."""
    from llmrun import Context, Type

    with pytest.raises(SchemaError, match=r"Bad\.x has the unsupported type"):
        type("Bad", (Type,), {"__annotations__": {"x": Any}, "x": Context("x")})
    with pytest.raises(SchemaError, match="unknown constraint"):
        Context("a date", format="date")
    text = (ROOT / "docs" / "guide" / "typed.md").read_text(encoding="utf-8")
    assert "UnsupportedFeatureError` naming the field" not in text


def test_fine_tuning_guide_names_checkpoint_folders_as_written() -> None:
    from llmrun.backends.local.checkpointing import _STEP_DIR  # the folder name pattern in use

    text = (ROOT / "docs" / "guide" / "fine-tuning.md").read_text(encoding="utf-8")
    names = re.findall(r"checkpoints/(step-[^/\s]+)/", text)
    assert names
    for name in names:
        assert _STEP_DIR.match(name), name


def test_backends_guide_lists_every_local_option() -> None:
    pytest.importorskip("torch", reason="reads the local runner's signature")
    from llmrun.backends.local import LocalRunner
    from llmrun.config import accepted_options

    text = (ROOT / "docs" / "guide" / "backends.md").read_text(encoding="utf-8")
    for name in accepted_options(LocalRunner):
        assert f"`{name}`" in text, name
