"""Typed streaming: partial objects from a stream of JSON text, and async iteration of streams.

:meth:`ModelRunner.stream` with an output type hands the backend's text deltas
to :func:`typed_stream`, which yields a new object each time a value *closes*:
a field appears once its value is complete (a string once its closing quote
arrives, a number once the next ``,`` or ``}`` does), a list grows one finished
item at a time, and nested objects fill in the same way. The text is parsed
with pydantic-core's partial JSON parser (``from_json(..., allow_partial=True)``);
locally the grammar keeps every prefix valid JSON, and remote text is parsed
the same way.

The partial objects are built with ``model_construct``: only the fields
received so far are set (``partial.model_fields_set`` lists them; reading a
missing field raises ``AttributeError``, so use ``getattr(partial, "name",
None)``), fields with defaults hold their default until they arrive, and
values are not validated yet. The last item is the validated object parsed
from the whole text, equal to what :meth:`ModelRunner.generate` returns for the
same call; when the text does not validate, the stream raises
:class:`~llmrun.errors.OutputValidationError` instead. A raw JSON Schema output
(no ``Type``) yields partial JSON values the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import types
import typing
from collections.abc import AsyncGenerator, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic_core import from_json

from llmrun.schema import Type

if TYPE_CHECKING:
    from llmrun.runner import OutputSpec

__all__ = ["aiterate", "partial_instance", "typed_stream"]

I = TypeVar("I")  # noqa: E741 - an item of an iterator
_NOTHING: Any = object()


def typed_stream(deltas: Iterator[str], output: OutputSpec) -> Iterator[Any]:
    """Partial outputs as ``deltas`` (JSON text) arrive, then the validated output.

    Closing the returned iterator closes ``deltas`` (which stops generation).
    """
    scanner = _Scanner()
    text: list[str] = []
    last: Any = _NOTHING
    try:
        for delta in deltas:
            text.append(delta)
            closed = scanner.feed(delta)
            if closed is None or scanner.complete:
                continue  # nothing newly closed; a complete value is yielded validated, below
            value = _partial_json("".join(text)[:closed])
            if value is _NOTHING or value == last:
                continue
            last = value
            yield partial_instance(output.output_type, value) if output.output_type is not None else value
    finally:
        close = getattr(deltas, "close", None)
        if close is not None:
            close()
    yield output.parse("".join(text))


def partial_instance(output_type: type[Type], value: Any) -> Any:
    """An instance of ``output_type`` with the fields of ``value`` (a dict) that are present, unvalidated.

    Nested ``Type`` fields, and lists of them, are built the same way; anything that is
    not a dict where a ``Type`` is expected is kept as it came.
    """
    if not isinstance(value, dict):
        return value
    fields: dict[str, Any] = {}
    for name, info in output_type.model_fields.items():
        key = info.alias or name
        if key in value:
            fields[name] = _partial_field(info.annotation, value[key])
    return output_type.model_construct(_fields_set=set(fields), **fields)


def _partial_field(annotation: Any, value: Any) -> Any:
    nested = _nested_type(annotation)
    if nested is not None and isinstance(value, dict):
        return partial_instance(nested, value)
    origin = typing.get_origin(annotation)
    if origin in (list, tuple, set, frozenset) and isinstance(value, list):
        args = typing.get_args(annotation)
        item = args[0] if args else Any
        return [_partial_field(item, v) for v in value]
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if (found := _nested_type(arg)) is not None and isinstance(value, dict):
                return partial_instance(found, value)
    return value


def _nested_type(annotation: Any) -> type[Type] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, Type) else None


def _partial_json(text: str) -> Any:
    try:
        return from_json(text, allow_partial=True)
    except ValueError:
        return _NOTHING


class _Scanner:
    """Finds where JSON values close in text fed piece by piece (strings and escapes tracked)."""

    def __init__(self) -> None:
        self.offset = 0
        self.depth = 0
        self.in_string = False
        self.escaped = False
        self.complete = False

    def feed(self, piece: str) -> int | None:
        """Feed the next piece; return the end offset of the last value or token closed in it, if any."""
        closed: int | None = None
        for i, char in enumerate(piece):
            if self.in_string:
                if self.escaped:
                    self.escaped = False
                elif char == "\\":
                    self.escaped = True
                elif char == '"':
                    self.in_string = False
                    closed = self.offset + i + 1
                    self.complete = self.depth == 0
                continue
            if char == '"':
                self.in_string = True
            elif char in "{[":
                self.depth += 1
                closed = self.offset + i + 1
            elif char in "}]":
                self.depth -= 1
                closed = self.offset + i + 1
                self.complete = self.depth <= 0
            elif char in ",:":
                closed = self.offset + i + 1
        self.offset += len(piece)
        return closed


async def aiterate(iterator: Iterator[I]) -> AsyncGenerator[I, None]:
    """Iterate a blocking iterator (a backend's stream) without blocking the event loop.

    Each item is fetched in a worker thread; leaving the loop early closes ``iterator``.
    """
    done: Any = _NOTHING
    try:
        while True:
            item = await asyncio.to_thread(next, iterator, done)
            if item is done:
                return
            yield item
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            # a ValueError: still running in its worker thread (a cancelled fetch), where it ends
            with contextlib.suppress(ValueError):
                close()
