"""Moved to :mod:`llmrun.backends.sync` (shared with the OpenAI backend); kept as an alias."""

from __future__ import annotations

from llmrun.backends.sync import run_sync

__all__ = ["run_sync"]
