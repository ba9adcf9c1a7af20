"""Small value checks shared by every module that validates options (one home for each rule)."""

from __future__ import annotations

import math

__all__ = ["is_int_at_least", "is_number_at_least"]


def is_int_at_least(value: object, minimum: int) -> bool:
    """``value`` is an ``int`` (not a ``bool``) and ``>= minimum``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def is_number_at_least(value: object, minimum: float, *, strict: bool = False) -> bool:
    """A finite ``int``/``float`` (not a ``bool``), ``>= minimum`` (``> minimum`` if ``strict``)."""
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        return False
    return value > minimum if strict else value >= minimum
