"""The Lamini backend: the Lamini cloud through the real ``lamini`` client.

Install with ``pip install "llmrun[lamini]"``. See :class:`LaminiRunner`.
"""

from __future__ import annotations

from llmrun.errors import DependencyError

try:
    import aiohttp  # noqa: F401
    import lamini  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the install
    raise DependencyError(
        f"the lamini backend needs the lamini client ({exc.name} is missing); "
        'install it with: pip install "llmrun[lamini]"'
    ) from exc

from llmrun.backends.lamini.runner import LaminiRunner

__all__ = ["LaminiRunner"]
