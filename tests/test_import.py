from __future__ import annotations

import subprocess
import sys

import pytest


def test_import_llmrun_is_light() -> None:
    """`import llmrun` (and its public names) must not pull in torch, transformers or lamini."""
    code = (
        "import sys, llmrun\n"
        "from llmrun import Type, Context, BasicModelRunner, LLMEngine, GenerationConfig, load, ModelRunner\n"
        "heavy = [m for m in ('torch', 'transformers', 'lamini', 'xgrammar') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_version() -> None:
    import llmrun

    assert llmrun.__version__.count(".") == 2


def test_unknown_attribute() -> None:
    import llmrun

    with pytest.raises(AttributeError, match="nope"):
        llmrun.nope  # type: ignore[attr-defined]  # noqa: B018
