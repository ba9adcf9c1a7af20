"""mkdocs hooks: docstrings use Sphinx roles (``:class:`~llmrun.Type```), which mkdocstrings leaves raw.

``on_page_content`` turns each rendered role into a plain code span (``Type``; the ``~`` form keeps only
the last name, as Sphinx does), so the API reference shows names, not markup.
"""

from __future__ import annotations

import re
from typing import Any

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|data|mod|attr|exc|obj|const):<code>(~?)([^<]+)</code>")


def strip_sphinx_roles(html: str) -> str:
    """``:class:<code>~a.b.C</code>`` -> ``<code>C</code>``; without ``~`` the full dotted name stays."""
    return _ROLE.sub(
        lambda m: f"<code>{m.group(2).rsplit('.', 1)[-1] if m.group(1) else m.group(2)}</code>", html
    )


def on_page_content(html: str, **kwargs: Any) -> str:
    """mkdocs hook: clean every page's rendered HTML."""
    return strip_sphinx_roles(html)
