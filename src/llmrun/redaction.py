"""API keys that never show: :class:`Secret`, and redaction of every live key from errors and logs.

Each :class:`Secret` registers itself while it lives. :func:`redact` replaces every
registered key in a text with ``***``; :class:`~llmrun.errors.LLMRunError` applies it
to its message, so no llmrun error can carry a key (a server echoing the key in a
typed reply or an error body included), and a logging filter applies it to the
records of the loggers that can see a key (llmrun's own, and the ``lamini`` and
``openai`` clients', whose DEBUG lines print replies and request options).

Standard library only: :mod:`llmrun.errors` imports it.
"""

from __future__ import annotations

import logging
import re
import threading
import weakref
from typing import Any

__all__ = ["REDACTED_LOGGERS", "Secret", "redact"]

#: Loggers whose records are redacted once a key exists (a filter sees only its own logger's records).
REDACTED_LOGGERS = (
    "llmrun",
    "llmrun.backends.http",
    "llmrun.backends.lamini",
    "llmrun.backends.openai",
    "lamini",
    "lamini.api.lamini",
    "lamini.api.rest_requests",
    "lamini.api.train",
    "lamini.generation.process_generation_batch",
    "lamini.generation.generation_queue_3_10",
    "openai",
    "openai._base_client",
    "httpx",
    "httpx2",
)

#: Keys shorter than this are redacted only where they stand alone (not inside a longer word):
#: replacing every ``a`` of a one-letter key would garble every message.
SHORT_KEY = 8

_live: weakref.WeakSet[Secret] = weakref.WeakSet()
_lock = threading.Lock()
_filter_installed = False


class Secret:
    """A string that never shows itself in ``repr``/``str``; read it with :meth:`reveal`.

    While it lives, :func:`redact` (and so every llmrun error and the redacted loggers)
    replaces it with ``***``.
    """

    __slots__ = ("__weakref__", "_value")

    def __init__(self, value: str, *, public: bool = False) -> None:
        """``public=True``: a placeholder that is no secret (``"EMPTY"``), not redacted anywhere."""
        self._value = value
        if value and not public:
            with _lock:
                _live.add(self)
            _install_log_filter()

    def reveal(self) -> str:
        return self._value

    def redact(self, text: str) -> str:
        """``text`` with every occurrence of this secret replaced by ``***``."""
        return _replace(text, self._value) if self._value else text

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __reduce__(self) -> Any:  # no pickling: a pickle would hold the key in clear
        raise TypeError("an API key cannot be pickled")


def redact(text: str) -> str:
    """``text`` with every live :class:`Secret` replaced by ``***`` (longest first)."""
    with _lock:
        values = sorted((s.reveal() for s in _live), key=len, reverse=True)
    for value in values:
        if value in text:
            text = _replace(text, value)
    return text


def _replace(text: str, value: str) -> str:
    """``text`` with ``value`` replaced by ``***``; a short value only where it stands alone."""
    if len(value) >= SHORT_KEY:
        return text.replace(value, "***")
    return re.sub(rf"(?<![\w-]){re.escape(value)}(?![\w-])", "***", text)


def redact_any(value: Any) -> Any:
    """:func:`redact` for a string; other values as they are."""
    return redact(value) if isinstance(value, str) else value


class RedactingFilter(logging.Filter):
    """Formats a record's message, then removes every live key from it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: leave it to the logging module to report
            return True
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


_FILTER = RedactingFilter()


def _install_log_filter() -> None:
    global _filter_installed
    if _filter_installed:
        return
    with _lock:
        if not _filter_installed:
            for name in REDACTED_LOGGERS:
                logging.getLogger(name).addFilter(_FILTER)
            _filter_installed = True
