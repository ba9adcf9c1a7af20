"""The Lamini backend: the Lamini cloud through the real ``lamini`` client.

Install with ``pip install -e ".[lamini]"`` in a checkout (see the README). See :class:`LaminiRunner`.
"""

from __future__ import annotations

from llmrun.errors import DependencyError

try:
    import aiohttp  # noqa: F401
    import lamini  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the install
    raise DependencyError(
        f"the lamini backend needs the lamini client ({exc.name} is missing); "
        'install the lamini extra: pip install -e ".[lamini]" in an llmrun checkout (see the README)'
    ) from exc

from llmrun.backends.lamini.runner import LaminiRunner

__all__ = ["LaminiRunner"]
