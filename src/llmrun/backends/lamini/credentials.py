"""Where the Lamini API key and URL come from, and a wrapper that keeps the key out of sight.

Precedence, first found wins:

1. ``api_key`` / ``api_url`` arguments;
2. the 2023 ``config`` dict: ``{"production.key": ..., "production.url": ...}``
   or ``{"production": {"key": ..., "url": ...}}`` (the ``staging`` or ``local``
   section instead when ``LLAMA_ENVIRONMENT`` says so, as 2023 read it);
3. ``LAMINI_API_KEY`` / ``LAMINI_API_URL`` environment variables;
4. ``POWERML__PRODUCTION__KEY`` / ``POWERML__PRODUCTION__URL``, the 2023
   ``llama`` package's environment variables;
5. ``lamini.api_key`` / ``lamini.api_url`` set on the ``lamini`` module;
6. ``~/.lamini/configure.yaml`` (``production: {key: ..., url: ...}``), read by
   the ``lamini`` client itself;
7. ``~/.powerml/configure_llama.yaml`` (same layout), the 2023 config file.

The URL defaults to the ``lamini`` client's ``https://api.lamini.ai``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from llmrun.errors import ConfigurationError
from llmrun.redaction import Secret

__all__ = ["Credentials", "Secret", "resolve_credentials"]

MISSING_KEY_HELP = (
    "no Lamini API key found. Pass api_key=..., set the LAMINI_API_KEY environment variable, "
    'pass config={"production.key": ...}, or add "production: {key: ...}" to ~/.lamini/configure.yaml '
    "(2023's POWERML__PRODUCTION__KEY and ~/.powerml/configure_llama.yaml are read too). "
    "Your key is at https://app.lamini.ai/account"
)


@dataclass(frozen=True)
class Credentials:
    """A resolved key and base URL (no trailing slash)."""

    key: Secret
    url: str


def resolve_credentials(
    api_key: str | None = None,
    api_url: str | None = None,
    config: Mapping[str, Any] | None = None,
) -> Credentials:
    """Resolve key and URL (see the module docstring); a missing key raises before any network call."""
    cfg_key, cfg_url = _from_2023_config(config)
    key = _first(
        api_key,
        cfg_key,
        os.environ.get("LAMINI_API_KEY"),
        os.environ.get("POWERML__PRODUCTION__KEY"),
        _module_setting("api_key"),
    )
    url = _first(
        api_url,
        cfg_url,
        os.environ.get("LAMINI_API_URL"),
        os.environ.get("POWERML__PRODUCTION__URL"),
        _module_setting("api_url"),
    )
    if key is None or url is None:
        file_key, default_url = _from_lamini_files()
        powerml_key, powerml_url = _from_powerml_file() if file_key is None else (None, None)
        key = _first(key, file_key, powerml_key)
        url = _first(url, powerml_url, default_url)
    if key is None:
        raise ConfigurationError(MISSING_KEY_HELP)
    if not isinstance(key, str) or not key.strip():
        raise ConfigurationError("the Lamini API key must be a non-empty string; " + MISSING_KEY_HELP)
    return Credentials(key=Secret(key.strip()), url=_check_url(url))


def _from_2023_config(config: Mapping[str, Any] | None) -> tuple[str | None, str | None]:
    if config is None:
        return None, None
    if isinstance(config, str) and config == os.environ.get("LLMRUN_CONFIG"):
        # llmrun's settings resolution reads option "config" from LLMRUN_CONFIG, which is the
        # path of llmrun's own config file, not the 2023 Lamini dict: not meant for us.
        return None, None
    if not isinstance(config, Mapping):
        raise ConfigurationError(
            f"config must be a dict such as {{'production.key': '...'}}, got {type(config).__name__}"
        )
    section = _llama_environment()
    nested = config.get(section)
    if nested is not None and not isinstance(nested, Mapping):
        raise ConfigurationError(f"config[{section!r}] must be a dict like {{'key': '...', 'url': '...'}}")
    nested = nested or {}
    return (
        _first(config.get(f"{section}.key"), nested.get("key")),
        _first(config.get(f"{section}.url"), nested.get("url")),
    )


def _llama_environment() -> str:
    """The section of the 2023 config dict to read: ``LLAMA_ENVIRONMENT`` (2023's), default production."""
    value = os.environ.get("LLAMA_ENVIRONMENT", "PRODUCTION").strip().lower()
    if value not in ("production", "staging", "local"):
        raise ConfigurationError(
            f"LLAMA_ENVIRONMENT={value!r} is not one of PRODUCTION, STAGING, LOCAL (2023's values); "
            "unset it to read the 'production' section of config"
        )
    return value


def _module_setting(name: str) -> Any:
    import lamini

    return getattr(lamini, name, None)


def _from_lamini_files() -> tuple[str | None, str]:
    """Key and URL from ``~/.lamini/configure.yaml`` (and LAMINI__* env), via the lamini client."""
    from lamini.api.lamini_config import get_config, get_configured_key, get_configured_url

    try:
        cfg = get_config()
    except Exception as exc:  # a broken YAML file: say which file, not the parser's internals
        raise ConfigurationError(f"~/.lamini/configure.yaml cannot be read: {type(exc).__name__}") from None
    key = get_configured_key(cfg)
    return (str(key) if key else None), str(get_configured_url(cfg))


#: The 2023 ``llama`` package's config file (``production: {key: ..., url: ...}``).
POWERML_CONFIG_FILE = "~/.powerml/configure_llama.yaml"


def _from_powerml_file() -> tuple[str | None, str | None]:
    """Key and URL from ``~/.powerml/configure_llama.yaml``, where 2023's ``llama`` kept them."""
    path = os.path.expanduser(POWERML_CONFIG_FILE)
    if not os.path.isfile(path):
        return None, None
    import yaml  # type: ignore[import-untyped]

    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"{POWERML_CONFIG_FILE} cannot be read: {type(exc).__name__}") from None
    production = data.get("production") if isinstance(data, dict) else None
    if production is None:
        return None, None
    if not isinstance(production, dict):
        raise ConfigurationError(f"{POWERML_CONFIG_FILE}: 'production' must hold 'key' (and 'url')")
    key, url = production.get("key"), production.get("url")
    return (str(key) if key else None), (str(url) if url else None)


def _check_url(url: Any) -> str:
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ConfigurationError(
            f"the Lamini API URL must start with http:// or https://, got {url!r}; "
            "set api_url=... or LAMINI_API_URL (the default is https://api.lamini.ai)"
        )
    return url.rstrip("/")


def _first(*values: Any) -> Any:
    return next((v for v in values if v not in (None, "")), None)
