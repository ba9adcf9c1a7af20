"""Fine-tuning data: lists, JSON lines, CSV and DataFrames become validated examples.

Every loader returns a ``list[TrainingExample]`` or raises
:class:`~llmrun.errors.DataError` naming the source, the 1-based line (or item,
or row) and what to fix. Loading is all-or-nothing: the whole input is checked
before anything is returned, and an empty dataset is an error.

Plain rows become ``prompt = row[input_key]``, ``completion = row[output_key]``
(a space goes between them unless the prompt ends in whitespace; backends add
the end-of-sequence token). Typed ``(input Type, output Type)`` pairs become
``prompt = render_prompt(input, type(output))`` and ``completion =`` the
output's compact JSON, so a tuned model learns the schema's format.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from llmrun.errors import DataError, InvalidInputError
from llmrun.schema import Type, render_prompt
from llmrun.training import TrainingExample

__all__ = ["load_csv", "load_dataframe", "load_examples", "load_jsonlines"]

#: How many problems one DataError lists before it summarises the rest.
_MAX_LISTED = 5


class _Problems:
    """Collects every problem of a source, then raises one DataError for all of them."""

    def __init__(self, source: str, unit: str) -> None:
        self.source = source
        self.unit = unit
        self.items: list[tuple[int | None, str]] = []

    def add(self, where: int | None, message: str) -> None:
        self.items.append((where, message))

    def where(self, where: int | None) -> str:
        return self.source if where is None else f"{self.source}, {self.unit} {where}"

    def raise_if_any(self) -> None:
        if not self.items:
            return
        first_where, first = self.items[0]
        text = f"{self.where(first_where)}: {first}"
        rest = self.items[1:]
        if rest:
            listed = "; ".join(f"{self.unit} {w}: {m}" if w else m for w, m in rest[: _MAX_LISTED - 1])
            more = len(rest) - (_MAX_LISTED - 1)
            text += f" (also {listed}" + (f"; and {more} more problem(s))" if more > 0 else ")")
        text += "; nothing was loaded"
        raise DataError(text, source=self.source, line=first_where)


def _check_keys(input_key: str, output_key: str) -> None:
    for name, key in (("input_key", input_key), ("output_key", output_key)):
        if not isinstance(key, str) or not key:
            raise InvalidInputError(f"{name} must be a non-empty string naming a field, got {key!r}")
    if input_key == output_key:
        raise InvalidInputError(
            f"input_key and output_key are both {input_key!r}; they must name different fields"
        )


def _plain_example(prompt: str, completion: str, template: str | None) -> TrainingExample:
    prompt = render_prompt(prompt, None, template) if template is not None else prompt
    separator = "" if prompt[-1:].isspace() or completion[:1].isspace() else " "
    return TrainingExample(prompt=prompt, completion=completion, separator=separator)


def _typed_example(value: Any, output: Type, template: str | None) -> TrainingExample:
    prompt = render_prompt(value, type(output), template)
    return TrainingExample(prompt=prompt, completion=output.model_dump_json(), separator="")


def _describe(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _row_example(
    row: object,
    where: int,
    problems: _Problems,
    input_key: str,
    output_key: str,
    template: str | None,
) -> TrainingExample | None:
    """Validate one dict-like row; record problems and return None when it is bad."""
    if not isinstance(row, Mapping):
        problems.add(
            where,
            f"expected an object with keys {input_key!r} and {output_key!r}, got {type(row).__name__} "
            f"{_describe(row)}",
        )
        return None
    values: list[str] = []
    ok = True
    for role, key in (("input_key", input_key), ("output_key", output_key)):
        if key not in row:
            found = ", ".join(repr(k) for k in list(row)[:8]) or "none"
            problems.add(
                where,
                f"missing key {key!r} (keys found: {found}); add it, or pass {role}=... naming the field "
                "that holds the " + ("prompts" if role == "input_key" else "answers"),
            )
            ok = False
            continue
        value = row[key]
        if value is None or (isinstance(value, float) and math.isnan(value)):
            problems.add(where, f"{key!r} is empty (null); give it a non-empty string or remove the row")
            ok = False
        elif not isinstance(value, str):
            problems.add(
                where,
                f"{key!r} must be a string, got {type(value).__name__} {_describe(value)}; "
                "write it as a quoted string",
            )
            ok = False
        elif not value.strip():
            problems.add(where, f"{key!r} is empty; give it a non-empty string or remove the row")
            ok = False
        else:
            values.append(value)
    if not ok:
        return None
    return _plain_example(values[0], values[1], template)


def _pair_example(item: Any, where: int, problems: _Problems, template: str | None) -> TrainingExample | None:
    """Validate one ``(input, output)`` pair of a Type list."""
    value, output = item
    if not isinstance(output, Type):
        problems.add(
            where,
            f"the output of a pair must be a llmrun.Type instance, got {type(output).__name__} "
            f"{_describe(output)}",
        )
        return None
    if isinstance(value, str):
        if not value.strip():
            problems.add(where, "the input of the pair is an empty string")
            return None
    elif not isinstance(value, Type):
        problems.add(
            where,
            f"the input of a pair must be a llmrun.Type instance or a string, got {type(value).__name__} "
            f"{_describe(value)}",
        )
        return None
    return _typed_example(value, output, template)


def _is_dataframe(data: object) -> bool:
    return type(data).__module__.split(".")[0] == "pandas" and hasattr(data, "columns")


def load_examples(
    data: Iterable[Any],
    input_key: str = "input",
    output_key: str = "output",
    *,
    template: str | None = None,
    source: str = "data",
) -> list[TrainingExample]:
    """Examples from a list of dicts, or of ``(input Type, output Type)`` pairs.

    Dicts need ``input_key`` and ``output_key`` with non-empty string values.
    Pairs render as in typed generation (``template`` as the runner's). A pandas
    DataFrame is passed on to :func:`load_dataframe`. Problems are reported by
    1-based item number under the name ``source``.
    """
    _check_keys(input_key, output_key)
    if _is_dataframe(data):
        return load_dataframe(data, input_key, output_key, template=template)
    if isinstance(data, str | bytes | Mapping) or not isinstance(data, Iterable):
        raise DataError(
            f"{source}: expected a list of dicts (with keys {input_key!r} and {output_key!r}) or of "
            f"(input, output) Type pairs, got {type(data).__name__}; to load a file use "
            "load_data_from_jsonlines(...) or load_data_from_csv(...)",
            source=source,
        )
    problems = _Problems(source, "item")
    examples: list[TrainingExample] = []
    for where, item in enumerate(data, start=1):
        if isinstance(item, tuple | list) and len(item) == 2 and isinstance(item[1], Type):
            example = _pair_example(item, where, problems, template)
        else:
            example = _row_example(item, where, problems, input_key, output_key, template)
        if example is not None:
            examples.append(example)
    problems.raise_if_any()
    _require_some(examples, source)
    return examples


def _require_some(examples: list[TrainingExample], source: str) -> None:
    if not examples:
        raise DataError(f"{source} holds no examples; give at least one input/output pair", source=source)


def _read_bytes(path: str | Path) -> tuple[str, bytes]:
    p = Path(path)
    name = str(p)
    if not p.exists():
        raise DataError(f"{name}: file not found; check the path", source=name)
    if not p.is_file():
        raise DataError(f"{name}: not a file; pass the path of a data file", source=name)
    try:
        return name, p.read_bytes()
    except OSError as exc:
        raise DataError(f"{name}: cannot be read ({exc.strerror or exc})", source=name) from exc


def _decode_error(name: str, raw: bytes, exc: UnicodeDecodeError, base_line: int = 1) -> DataError:
    line = base_line + raw.count(b"\n", 0, exc.start)
    return DataError(
        f"{name}, line {line}: not valid UTF-8 (byte 0x{raw[exc.start]:02x}); save the file as UTF-8; "
        "nothing was loaded",
        source=name,
        line=line,
    )


def load_jsonlines(
    path: str | Path,
    input_key: str = "input",
    output_key: str = "output",
    *,
    template: str | None = None,
) -> list[TrainingExample]:
    """Examples from a JSON-lines file: one JSON object per line (blank lines are skipped).

    The file must be UTF-8 (a byte-order mark is accepted).
    """
    _check_keys(input_key, output_key)
    name, raw = _read_bytes(path)
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    problems = _Problems(name, "line")
    examples: list[TrainingExample] = []
    for number, line_bytes in enumerate(raw.split(b"\n"), start=1):
        try:
            line = line_bytes.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _decode_error(name, line_bytes, exc, base_line=number) from None
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.add(number, f"not valid JSON ({exc.msg} at column {exc.colno}); fix the line")
            continue
        example = _row_example(row, number, problems, input_key, output_key, template)
        if example is not None:
            examples.append(example)
    problems.raise_if_any()
    _require_some(examples, name)
    return examples


def load_csv(
    path: str | Path,
    input_key: str = "input",
    output_key: str = "output",
    *,
    template: str | None = None,
) -> list[TrainingExample]:
    """Examples from a UTF-8 CSV file whose header row names ``input_key`` and ``output_key``.

    Lines are counted in the file (the header is line 1); a quoted value may
    span several lines.
    """
    _check_keys(input_key, output_key)
    name, raw = _read_bytes(path)
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _decode_error(name, raw, exc) from None
    reader = csv.reader(io.StringIO(text, newline=""))
    problems = _Problems(name, "line")
    try:
        header = next(reader, None)
        if header is None:
            raise DataError(f"{name} is empty; it needs a header row and at least one data row", source=name)
        missing = [k for k in (input_key, output_key) if k not in header]
        if missing:
            found = ", ".join(repr(h) for h in header) or "none"
            raise DataError(
                f"{name}, line 1: the header has no column {' or '.join(repr(k) for k in missing)} "
                f"(columns: {found}); rename the column, or pass input_key=/output_key= naming it",
                source=name,
                line=1,
            )
        i_col, o_col = header.index(input_key), header.index(output_key)
        examples: list[TrainingExample] = []
        start = reader.line_num + 1
        for fields in reader:
            where, start = start, reader.line_num + 1
            if not fields or all(not f.strip() for f in fields):
                continue
            if len(fields) != len(header):
                problems.add(
                    where,
                    f"the row has {len(fields)} field(s) but the header has {len(header)}; "
                    "quote values that contain commas",
                )
                continue
            row = {input_key: fields[i_col], output_key: fields[o_col]}
            example = _row_example(row, where, problems, input_key, output_key, template)
            if example is not None:
                examples.append(example)
    except csv.Error as exc:
        raise DataError(
            f"{name}, line {reader.line_num}: malformed CSV ({exc}); nothing was loaded",
            source=name,
            line=reader.line_num,
        ) from None
    problems.raise_if_any()
    _require_some(examples, name)
    return examples


def load_dataframe(
    df: Any,
    input_key: str = "input",
    output_key: str = "output",
    *,
    template: str | None = None,
) -> list[TrainingExample]:
    """Examples from a pandas DataFrame with columns ``input_key`` and ``output_key``.

    Problems are reported by 1-based row position (and index label).
    """
    _check_keys(input_key, output_key)
    if not _is_dataframe(df):
        raise DataError(
            f"expected a pandas DataFrame, got {type(df).__name__}; use load_data(...) for lists",
            source="DataFrame",
        )
    columns = list(df.columns)
    missing = [k for k in (input_key, output_key) if k not in columns]
    if missing:
        raise DataError(
            f"DataFrame has no column {' or '.join(repr(k) for k in missing)} "
            f"(columns: {', '.join(repr(c) for c in columns) or 'none'}); pass input_key=/output_key= "
            "naming the columns",
            source="DataFrame",
        )
    problems = _Problems("DataFrame", "row")
    examples: list[TrainingExample] = []
    inputs, outputs = df[input_key].tolist(), df[output_key].tolist()
    for where, (label, a, b) in enumerate(zip(df.index.tolist(), inputs, outputs, strict=True), start=1):
        before = len(problems.items)
        example = _row_example(
            {input_key: a, output_key: b}, where, problems, input_key, output_key, template
        )
        for i in range(before, len(problems.items)):
            w, msg = problems.items[i]
            problems.items[i] = (w, f"(index {label!r}) {msg}")
        if example is not None:
            examples.append(example)
    problems.raise_if_any()
    _require_some(examples, "DataFrame")
    return examples
