"""Batch input: rows from JSON lines, CSV or Parquet, each a prompt or the reason it is malformed.

A row that cannot become a prompt (a line that is not a JSON object, a missing or empty input
field, fields that do not validate into the input type) is not fatal: it becomes a
:class:`BadRow` and the output records why. A file that cannot be read at all is a
:class:`~llmrun.errors.InvalidInputError` before any work.
"""

from __future__ import annotations

import csv
import hashlib
import importlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from llmrun.errors import ConfigurationError, DependencyError, InvalidInputError, SchemaError
from llmrun.schema import Type, check_output_type

__all__ = ["INPUT_FORMATS", "BadRow", "InputRows", "RowPrompt", "import_type", "read_rows", "type_path"]

#: Input formats by file suffix.
INPUT_FORMATS: dict[str, str] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}

#: What one row becomes: a prompt (text or a Type instance) or a :class:`BadRow`.
RowPrompt = str | Type


@dataclass(frozen=True)
class BadRow:
    """A row that cannot become a prompt, and why."""

    reason: str


@dataclass(frozen=True)
class InputRows:
    """The rows of an input file, in order, and the SHA-256 of its bytes (a resumed job checks it)."""

    rows: list[RowPrompt | BadRow]
    digest: str


def import_type(path: str, what: str = "output type") -> type[Type]:
    """The :class:`~llmrun.Type` subclass named by ``"module:Class"`` (e.g. ``app:Answer``)."""
    module_name, sep, attr = path.partition(":") if isinstance(path, str) else ("", "", "")
    if not sep or not module_name or not attr:
        raise ConfigurationError(f"{what} {path!r} must be written module:Class, e.g. app:Answer")
    try:
        found: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            found = getattr(found, part)
    except ImportError as exc:
        raise ConfigurationError(
            f"cannot import the {what} {path!r}: {exc}; is the module on PYTHONPATH "
            "(run from its folder, or set PYTHONPATH)?"
        ) from None
    except AttributeError:
        raise ConfigurationError(f"cannot import the {what} {path!r}: {module_name} has no {attr}") from None
    try:
        return check_output_type(found)
    except SchemaError as exc:
        raise SchemaError(f"the {what} {path!r} cannot be used: {exc}") from None


def type_path(cls: type[Type]) -> str:
    """``"module:Class"`` of a Type, the inverse of :func:`import_type`."""
    return f"{cls.__module__}:{cls.__qualname__}"


def read_rows(path: Path, *, input_key: str = "input", input_type: type[Type] | None = None) -> InputRows:
    """Read ``path`` into prompts (``row[input_key]``, or the row validated into ``input_type``)."""
    if not isinstance(input_key, str) or not input_key:
        raise InvalidInputError(f"input_key must be a non-empty string naming a field, got {input_key!r}")
    kind = INPUT_FORMATS.get(path.suffix.lower())
    if kind is None:
        raise InvalidInputError(
            f"{path}: unknown input format {path.suffix!r}; use .jsonl (one JSON object per line), "
            ".csv (with a header row) or .parquet"
        )
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InvalidInputError(f"cannot read the batch input {path}: {exc.strerror or exc}") from None
    if kind == "parquet":
        records: list[dict[str, Any] | BadRow] = list(_parquet_rows(path, raw))
    else:
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise InvalidInputError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        records = _jsonl_rows(text) if kind == "jsonl" else _csv_rows(text, path)
    if not records:
        raise InvalidInputError(f"{path} holds no rows; nothing to generate")
    rows = [r if isinstance(r, BadRow) else _prompt(r, input_key, input_type) for r in records]
    return InputRows(rows, hashlib.sha256(raw).hexdigest())


def _jsonl_rows(text: str) -> list[dict[str, Any] | BadRow]:
    rows: list[dict[str, Any] | BadRow] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue  # blank lines are not rows
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            rows.append(BadRow(f"malformed row: line {number} is not valid JSON ({exc.msg})"))
            continue
        if not isinstance(value, dict):
            rows.append(
                BadRow(f"malformed row: line {number} is a {type(value).__name__}, not a JSON object")
            )
            continue
        rows.append(value)
    return rows


def _csv_rows(text: str, path: Path) -> list[dict[str, Any] | BadRow]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        return []
    except csv.Error as exc:
        raise InvalidInputError(f"{path}: the header row is not valid CSV ({exc})") from None
    rows: list[dict[str, Any] | BadRow] = []
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return rows
        except csv.Error as exc:
            rows.append(BadRow(f"malformed row: line {reader.line_num} is not valid CSV ({exc})"))
            continue
        if not any(cell.strip() for cell in cells):
            continue
        if len(cells) != len(header):
            rows.append(
                BadRow(
                    f"malformed row: line {reader.line_num} has {len(cells)} cells, the header {len(header)}"
                )
            )
            continue
        rows.append(dict(zip(header, cells, strict=True)))


def _parquet_rows(path: Path, raw: bytes) -> list[dict[str, Any]]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise DependencyError('reading Parquet needs pyarrow: pip install "llmrun[ray]"') from None
    try:
        rows: list[dict[str, Any]] = pq.read_table(pa.BufferReader(raw)).to_pylist()
    except (pa.ArrowException, OSError) as exc:
        raise InvalidInputError(f"cannot read {path} as Parquet: {exc}") from None
    return rows


def _prompt(row: dict[str, Any], input_key: str, input_type: type[Type] | None) -> RowPrompt | BadRow:
    if input_type is not None:
        fields = {name: row[name] for name in input_type.model_fields if name in row}
        try:
            return input_type.model_validate(fields)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '<row>'}: {e['msg']}" for e in exc.errors()[:3]
            )
            return BadRow(f"malformed row: does not fit {input_type.__name__} ({problems})")
    if input_key not in row:
        return BadRow(f"malformed row: no {input_key!r} field (it has: {', '.join(map(str, row)) or 'none'})")
    value = row[input_key]
    if not isinstance(value, str):
        return BadRow(f"malformed row: {input_key!r} is a {type(value).__name__}, not text")
    if not value.strip():
        return BadRow(f"malformed row: {input_key!r} is empty")
    return value
