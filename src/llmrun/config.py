"""Settings, resolved in one place: explicit arguments > environment > config file > defaults.

Environment variables are ``LLMRUN_<OPTION>`` (``LLMRUN_BACKEND``,
``LLMRUN_DEVICE``, ``LLMRUN_DTYPE``, ``LLMRUN_MODEL``, or any other option the
chosen backend accepts, upper-cased). The config file is TOML, found at
``$LLMRUN_CONFIG``, else ``./llmrun.toml``, else ``~/.config/llmrun/config.toml``::

    backend = "local"          # top-level keys apply to every backend
    model = "EleutherAI/pythia-70m"

    [local]                    # a table per backend, for that backend only
    device = "cpu"

    [lamini]
    timeout = 30
"""

from __future__ import annotations

import inspect
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmrun.errors import ConfigurationError

ENV_PREFIX = "LLMRUN_"
DEFAULT_BACKEND = "local"
DEFAULT_MODEL = "EleutherAI/pythia-70m"
#: Options every runner takes, handled by ``ModelRunner`` itself.
_RUNNER_OPTIONS = ("generation", "template")
#: Options never read from ``LLMRUN_<OPTION>``: ``LLMRUN_CONFIG`` names the config file.
_NOT_FROM_ENV = frozenset({"config"})


def config_file() -> Path | None:
    """The config file in force, or None when there is none."""
    explicit = os.environ.get(ENV_PREFIX + "CONFIG")
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise ConfigurationError(
                f"LLMRUN_CONFIG points to {path}, which is not a file; fix the path or unset LLMRUN_CONFIG"
            )
        return path
    for candidate in (Path("llmrun.toml"), Path.home() / ".config" / "llmrun" / "config.toml"):
        if candidate.is_file():
            return candidate
    return None


def read_config_file(path: Path | None = None) -> dict[str, Any]:
    """Parse the config file (``path`` or the one in force); {} when there is none."""
    path = path or config_file()
    if path is None:
        return {}
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"config file {path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigurationError(f"config file {path} cannot be read: {exc}") from None


@dataclass(frozen=True)
class ResolvedSettings:
    """The outcome of resolution: which backend, which model, which options."""

    backend: str
    model: str
    options: dict[str, Any]


def resolve_backend_and_model(
    backend: str | None, model: str | None, file_settings: Mapping[str, Any]
) -> tuple[str, str]:
    """Pick the backend name and model from the explicit value, env, file, default."""
    chosen_backend = _first(backend, os.environ.get(ENV_PREFIX + "BACKEND"), file_settings.get("backend"))
    chosen_model = _first(model, os.environ.get(ENV_PREFIX + "MODEL"), file_settings.get("model"))
    for name, value in (("backend", chosen_backend), ("model", chosen_model)):
        if value is not None and not isinstance(value, str):
            raise ConfigurationError(f"setting {name!r} must be a string, got {value!r}")
    return str(chosen_backend or DEFAULT_BACKEND), str(chosen_model or DEFAULT_MODEL)


def resolve_options(
    runner_cls: type, backend: str, explicit: Mapping[str, Any], file_settings: Mapping[str, Any]
) -> dict[str, Any]:
    """Merge the options ``runner_cls`` accepts: explicit > env > file > its defaults.

    Unknown explicit options raise :class:`ConfigurationError` listing the known ones.
    """
    accepted = accepted_options(runner_cls)
    unknown = sorted(set(explicit) - set(accepted))
    if unknown:
        raise ConfigurationError(
            f"backend {backend!r} does not take option(s) {', '.join(unknown)}; "
            f"it takes: {', '.join(sorted(accepted)) or 'none'}"
        )
    section = file_settings.get(backend, {})
    if not isinstance(section, Mapping):
        raise ConfigurationError(f"config file section [{backend}] must be a table, got {section!r}")
    merged: dict[str, Any] = {}
    for name, default in accepted.items():
        if name in explicit:
            merged[name] = explicit[name]
        elif name not in _NOT_FROM_ENV and (env := os.environ.get(ENV_PREFIX + name.upper())) is not None:
            merged[name] = _coerce(name, env, default)
        elif name in section:
            merged[name] = section[name]
        elif name in file_settings and name not in ("backend", "model"):
            merged[name] = file_settings[name]
    return merged


def accepted_options(runner_cls: type) -> dict[str, Any]:
    """The keyword options of a runner's constructor, with their defaults."""
    params = inspect.signature(runner_cls.__init__).parameters  # type: ignore[misc]
    return {
        name: p.default
        for name, p in params.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and name not in _RUNNER_OPTIONS
    }


def _coerce(name: str, raw: str, default: Any) -> Any:
    """Turn an env var's text into the type of the option's default."""
    if isinstance(default, bool):
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigurationError(
            f"{ENV_PREFIX}{name.upper()}={raw!r} is not a boolean; use 1/0 or true/false"
        )
    for kind in (int, float):
        if isinstance(default, kind):
            try:
                return kind(raw)
            except ValueError:
                raise ConfigurationError(
                    f"{ENV_PREFIX}{name.upper()}={raw!r} is not a valid {kind.__name__}"
                ) from None
    return raw


def _first(*values: Any) -> Any:
    for value in values:
        if value not in (None, ""):
            return value
    return None
