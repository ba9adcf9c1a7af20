"""Offline testing: fakes, cassettes, overrides, tiny checkpoints, a fake Lamini server, pytest fixtures.

- :class:`FakeRunner`: schema-valid made-up answers, seeded; :class:`FunctionRunner`: answers and
  stream scripts from your function (:func:`stream_script` fails a stream on chunk k).
- :func:`cassette`: record completions once, replay them with no network and no model.
- :func:`override`: swap what ``llmrun.load``, ``BasicModelRunner`` and ``LLMEngine`` build.

Enable the fixtures in your ``conftest.py`` with
``pytest_plugins = ["llmrun.testing.fixtures"]``.
"""

from __future__ import annotations

from llmrun.testing.cassette import Cassette, CassetteRunner, cassette
from llmrun.testing.fake import FakeRunner
from llmrun.testing.function import FunctionRunner, stream_script
from llmrun.testing.override import RunnerSpec, override

__all__ = [
    "Cassette",
    "CassetteRunner",
    "FakeRunner",
    "FunctionRunner",
    "RunnerSpec",
    "cassette",
    "override",
    "stream_script",
]
