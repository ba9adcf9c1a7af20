"""2023's ``setup_config``: process-wide settings that every 2023 facade reads as its ``config``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llmrun.errors import ConfigurationError

_config: dict[str, Any] | None = None


def setup_config(dictionary: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Set the 2023 settings dict (``{"production": {"key": ..., "url": ...}}``) for later facades.

    A facade built without ``config=`` uses it; an explicit ``config=`` wins.
    """
    global _config
    if dictionary is None:
        dictionary = {}
    if not isinstance(dictionary, Mapping):
        raise ConfigurationError(
            "setup_config takes a dict such as {'production': {'key': '...'}}, "
            f"got {type(dictionary).__name__}"
        )
    _config = dict(dictionary)
    return dict(_config)


def current_config() -> dict[str, Any] | None:
    """The dict given to :func:`setup_config`, or None."""
    return None if _config is None else dict(_config)


def reset_config() -> None:
    """Forget the :func:`setup_config` settings."""
    global _config
    _config = None
