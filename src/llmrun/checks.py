"""Small value checks shared by every module that validates options (one home for each rule)."""

from __future__ import annotations

import math
from typing import TypeGuard

__all__ = ["is_finite_number", "is_int", "is_int_at_least", "is_number_at_least"]


def is_int(value: object) -> TypeGuard[int]:
    """``value`` is an ``int`` and not a ``bool``."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_finite_number(value: object) -> TypeGuard[int | float]:
    """``value`` is a finite ``int``/``float`` and not a ``bool``."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def is_int_at_least(value: object, minimum: int) -> bool:
    """``value`` is an ``int`` (not a ``bool``) and ``>= minimum``."""
    return is_int(value) and value >= minimum


def is_number_at_least(value: object, minimum: float, *, strict: bool = False) -> bool:
    """A finite ``int``/``float`` (not a ``bool``), ``>= minimum`` (``> minimum`` if ``strict``)."""
    if not is_finite_number(value):
        return False
    return value > minimum if strict else value >= minimum
