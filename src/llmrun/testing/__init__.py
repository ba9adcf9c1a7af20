"""Offline testing: :class:`FakeRunner`, tiny checkpoints, a fake Lamini server, pytest fixtures.

Enable the fixtures in your ``conftest.py`` with
``pytest_plugins = ["llmrun.testing.fixtures"]``.
"""

from __future__ import annotations

from llmrun.testing.fake import FakeRunner

__all__ = ["FakeRunner"]
