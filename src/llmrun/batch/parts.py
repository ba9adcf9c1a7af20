"""Durable progress of a batch job: numbered part files plus a manifest, assembled atomically.

While a job runs, ``OUT.parts/`` holds ``manifest.json`` (what the job is: its settings, the
input's digest, rows and chunk size) and one ``part-NNNNNN.jsonl`` per finished chunk of rows,
each written to a temporary name, flushed to disk and renamed, so a part is either whole or
absent. A killed job resumed with the same settings redoes only the missing parts. When every
part is there they are assembled, in row order, into the output (written under a temporary
name and renamed) and the parts folder is removed.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmrun.errors import ConfigurationError, DependencyError, InvalidInputError

__all__ = ["OUTPUT_FORMATS", "PartStore", "Record", "read_output", "write_output"]

#: Output formats by file suffix.
OUTPUT_FORMATS: dict[str, str] = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}

#: One output row: index, output (object, text or None), error (reason or None),
#: finish_reason, prompt_tokens, completion_tokens.
Record = dict[str, Any]

_MANIFEST = "manifest.json"
_VERSION = 1


@dataclass(frozen=True)
class PartStore:
    """The parts folder of the output ``output``."""

    output: Path

    @property
    def folder(self) -> Path:
        """``OUT.parts`` next to the output."""
        return self.output.with_name(self.output.name + ".parts")

    def exists(self) -> bool:
        """Whether an unfinished job left parts here."""
        return (self.folder / _MANIFEST).is_file()

    def start(self, job: Mapping[str, Any]) -> None:
        """Begin a fresh job: an empty parts folder with the job's manifest."""
        self.clear()
        self.folder.mkdir(parents=True)
        _write_atomic(self.folder / _MANIFEST, json.dumps({"llmrun_batch": _VERSION, "job": dict(job)}))

    def check_same_job(self, job: Mapping[str, Any]) -> None:
        """Raise unless the parts here were written by a job with exactly these settings."""
        try:
            manifest = json.loads((self.folder / _MANIFEST).read_text(encoding="utf-8"))
            earlier = manifest["job"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigurationError(
                f"cannot resume: {self.folder / _MANIFEST} is unreadable ({exc}); "
                "pass --overwrite to start over"
            ) from None
        differ = sorted(k for k in set(job) | set(earlier) if job.get(k) != earlier.get(k))
        if differ:
            raise ConfigurationError(
                f"cannot resume: the parts in {self.folder} were written by a job with other settings "
                f"({', '.join(differ)} differ); rerun with the same settings, "
                "or pass --overwrite to start over"
            )

    def done(self) -> set[int]:
        """Numbers of the parts already written whole."""
        found = set()
        for path in self.folder.glob("part-*.jsonl"):
            number = path.stem.removeprefix("part-")
            if number.isdigit():
                found.add(int(number))
        return found

    def write(self, number: int, records: Iterable[Record]) -> None:
        """Write part ``number`` durably: whole or not at all."""
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        _write_atomic(self.folder / f"part-{number:06d}.jsonl", text)

    def records(self, total_rows: int) -> list[Record]:
        """Every finished row in index order, checked to hold each of ``total_rows`` exactly once."""
        found: list[Record] = []
        for path in sorted(self.folder.glob("part-*.jsonl")):
            for line in path.read_text(encoding="utf-8").splitlines():
                found.append(json.loads(line))
        found.sort(key=lambda r: int(r["index"]))
        indexes = [int(r["index"]) for r in found]
        if indexes != list(range(total_rows)):
            raise ConfigurationError(
                f"the parts in {self.folder} do not hold rows 0..{total_rows - 1} exactly once; "
                "they were changed by hand? pass --overwrite to start over"
            )
        return found

    def clear(self) -> None:
        """Remove the parts folder (and a stale temporary file)."""
        shutil.rmtree(self.folder, ignore_errors=True)


def write_output(path: Path, records: list[Record]) -> None:
    """Write ``records`` to ``path`` (Parquet or JSON lines by suffix) under a temporary name, then rename."""
    kind = output_format(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        if kind == "jsonl":
            _write_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
            return
        pa, pq = _pyarrow()
        try:
            table = pa.Table.from_pylist(records)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            # outputs whose values do not share one Arrow type (e.g. a str | int field): JSON text instead
            as_json = [
                {**r, "output": None if r["output"] is None else json.dumps(r["output"])} for r in records
            ]
            table = pa.Table.from_pylist(as_json)
        pq.write_table(table, tmp)
        _fsync(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_output(path: Path) -> list[Record]:
    """The records of a finished output file."""
    if output_format(path) == "jsonl":
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    _, pq = _pyarrow()
    rows: list[Record] = pq.read_table(path).to_pylist()
    return rows


def output_format(path: Path) -> str:
    """``"parquet"`` or ``"jsonl"`` by the output's suffix."""
    kind = OUTPUT_FORMATS.get(path.suffix.lower())
    if kind is None:
        raise InvalidInputError(
            f"{path}: unknown output format {path.suffix!r}; use .parquet or .jsonl (JSON lines)"
        )
    return kind


def _pyarrow() -> tuple[Any, Any]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise DependencyError(
            'writing Parquet needs pyarrow: pip install "llmrun[ray]" (or use .jsonl)'
        ) from None
    return pa, pq


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with tmp.open("w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    with path.open("rb") as handle:
        os.fsync(handle.fileno())
