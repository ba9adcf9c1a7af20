"""Batch generation: a file of rows through a model, in one process or on a Ray cluster.

``llmrun batch MODEL INPUT --output OUT`` on the command line, :func:`run_batch` from Python.
See the scale-out guide.
"""

from __future__ import annotations

from llmrun.batch.job import BatchSummary, run_batch
from llmrun.batch.rows import import_type

__all__ = ["BatchSummary", "import_type", "run_batch"]
