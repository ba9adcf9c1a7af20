"""TrainOptions checks every value when built, with the shared number rules (llmrun/checks.py)."""

from __future__ import annotations

import math
import re

import pytest

from llmrun.errors import ConfigurationError
from llmrun.training import TrainOptions


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("epochs", 0, "integer >= 1"),
        ("epochs", True, "integer >= 1"),
        ("epochs", "3", "integer >= 1"),
        ("max_length", 1, "integer >= 2"),
        ("eval_max_examples", -1, "integer >= 0"),
        ("learning_rate", 0.0, "finite number in (0.0, 1.0]"),
        ("learning_rate", math.nan, "finite number in (0.0, 1.0]"),
        ("warmup_ratio", 1.5, "finite number in [0.0, 1.0]"),
        ("max_grad_norm", math.inf, "finite number in (0.0, inf)"),
        ("max_grad_norm", 0, "finite number in (0.0, inf)"),
        ("seed", 1.0, "must be an integer"),
        ("seed", False, "must be an integer"),
    ],
)
def test_a_bad_value_names_the_option_and_the_rule(option: str, value: object, says: str) -> None:
    with pytest.raises(ConfigurationError, match=rf"{option}=.*{re.escape(says)}"):
        TrainOptions(**{option: value})  # type: ignore[arg-type]


def test_good_values_pass() -> None:
    options = TrainOptions(epochs=2, learning_rate=1.0, warmup_ratio=0, max_grad_norm=0.5, seed=7)
    assert options.epochs == 2
    assert options.max_grad_norm == 0.5
