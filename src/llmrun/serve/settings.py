"""The server's settings: explicit > ``LLMRUN_SERVE_*`` environment > ``[serve]`` in llmrun.toml > defaults.

The model's own options (``device``, ``dtype``, ``quantize``, ...) are resolved by
:func:`llmrun.load` as everywhere else (``LLMRUN_DEVICE``, ``[local]``). The API key comes from
``--api-key`` or ``LLMRUN_SERVE_API_KEY`` only (never from the config file), and never shows in
reprs or logs.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from llmrun.checks import is_int
from llmrun.config import ENV_PREFIX, Option, from_env_text, read_config_file
from llmrun.errors import ConfigurationError

ENV_SERVE_PREFIX = ENV_PREFIX + "SERVE_"


@dataclass(frozen=True)
class ServeSettings:
    """How ``llmrun serve`` listens and admits requests. Validated on construction.

    ``max_batch_size``: rows decoded together at each step; ``max_queue``: rows waiting or running
    before new requests get 429; ``timeout_s``: a request's limit from arrival to its last token;
    ``max_body_bytes``: the largest request body; ``shutdown_grace_s``: how long in-flight
    requests may finish after a shutdown signal; ``model_name``: the name clients use (default:
    the model argument); ``chat_template``: ``plain`` or a Jinja file, for chat on a model whose
    tokenizer has no chat template (it replaces the tokenizer's own when set).
    """

    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = field(default=None, repr=False)
    max_batch_size: int = 32
    max_queue: int = 256
    timeout_s: float = 300.0
    max_body_bytes: int = 4 * 1024 * 1024
    shutdown_grace_s: float = 30.0
    model_name: str | None = None
    chat_template: str | None = None

    def __post_init__(self) -> None:
        def bad(name: str, rule: str) -> ConfigurationError:
            return ConfigurationError(f"serve setting {name}={getattr(self, name)!r} is invalid: {rule}")

        if not isinstance(self.host, str) or not self.host:
            raise bad("host", "give a host name or address such as 127.0.0.1")
        if not is_int(self.port) or not 0 <= self.port <= 65535:
            raise bad("port", "use an integer in 0..65535 (0 picks a free port)")
        for name in ("max_batch_size", "max_queue", "max_body_bytes"):
            if not is_int(getattr(self, name)) or getattr(self, name) < 1:
                raise bad(name, "use a positive integer")
        for name in ("timeout_s", "shutdown_grace_s"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
                raise bad(name, "use a number of seconds > 0")
        if self.api_key is not None and (not isinstance(self.api_key, str) or not self.api_key.strip()):
            raise ConfigurationError("the serve API key must be a non-empty string")
        for name in ("model_name", "chat_template"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise bad(name, "use a non-empty string")

    @classmethod
    def resolve(cls, explicit: Mapping[str, Any] | None = None) -> ServeSettings:
        """Settings from ``explicit`` values (``None`` ones skipped), the environment, the config file."""
        given = {k: v for k, v in (explicit or {}).items() if v is not None}
        names = {f.name: f.default for f in dataclasses.fields(cls)}
        unknown = sorted(set(given) - set(names))
        if unknown:
            raise ConfigurationError(
                f"unknown serve setting(s) {', '.join(unknown)}; known: {', '.join(names)}"
            )
        section = read_config_file().get("serve", {})
        if not isinstance(section, Mapping):
            raise ConfigurationError(f"config file section [serve] must be a table, got {section!r}")
        if "api_key" in section:
            raise ConfigurationError(
                "[serve] api_key is not read from the config file; use --api-key or LLMRUN_SERVE_API_KEY"
            )
        unknown = sorted(set(section) - set(names))
        if unknown:
            raise ConfigurationError(
                f"unknown [serve] setting(s) {', '.join(unknown)}; known: {', '.join(names)}"
            )
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        for name, default in names.items():
            env = os.environ.get(ENV_SERVE_PREFIX + name.upper())
            if name in given:
                values[name] = given[name]
            elif env is not None and env != "":
                env_name = ENV_SERVE_PREFIX + name.upper()
                values[name] = from_env_text(Option(name, hints[name], default), env_name, env)
            elif name in section:
                values[name] = section[name]
        return cls(**values)
