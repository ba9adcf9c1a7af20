"""``llmrun serve``: a local model on the Lamini and OpenAI wires, with dynamic batching.

Needs the ``serve`` extra (``pip install "llmrun[serve]"``) and the ``local`` one. Import
:func:`create_app` (an ASGI app over a :class:`~llmrun.backends.local.engine.LocalEngine`) or run
:func:`serve`, which is what the ``llmrun serve`` command does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmrun.serve.settings import ServeSettings

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from llmrun.backends.local.engine import LocalEngine

__all__ = ["ServeSettings", "create_app", "serve"]


def create_app(engine: LocalEngine, settings: ServeSettings, model_name: str) -> Starlette:
    """An ASGI app serving ``engine`` as ``model_name``; see :mod:`llmrun.serve.app`."""
    from llmrun.serve.app import create_app as build

    return build(engine, settings, model_name)


def serve(model: str, settings: ServeSettings, **load_options: Any) -> None:
    """Load ``model`` on the local backend and serve it until interrupted (Ctrl-C finishes in-flight work)."""
    from llmrun.serve.launch import run

    run(model, settings, **load_options)
