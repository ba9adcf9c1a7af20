"""The unit of batch work: one chunk of rows through one runner, every row answered or its error recorded.

:class:`ChunkWorker` is what runs in the single process and in each Ray actor alike: it loads the
runner once (:func:`llmrun.load`) and answers chunks with :meth:`~llmrun.ModelRunner.run`. Chunks
travel as JSON (:func:`encode_chunk`), so the same bytes reach a local call or a remote actor.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from llmrun.batch.parts import Record
from llmrun.batch.rows import BadRow, RowPrompt, import_type
from llmrun.errors import BatchError, GenerationError, InvalidInputError
from llmrun.runner import ModelRunner, RunResult
from llmrun.schema import Type

__all__ = ["ROW_ERRORS", "BatchSpec", "ChunkWorker", "decode_chunk", "encode_chunk"]

#: Errors that belong to one row (a prompt too long, an output outside the schema): recorded, not fatal.
ROW_ERRORS: tuple[type[Exception], ...] = (InvalidInputError, GenerationError)


@dataclass(frozen=True)
class BatchSpec:
    """What every worker needs to answer rows: the model, how to load it, what to ask for.

    ``output_type`` / ``input_type``: a :class:`~llmrun.Type` or its ``"module:Class"`` path
    (a path is imported where the worker runs). ``generation``: options for ``runner.run``.
    """

    model: str
    backend: str | None = None
    load_options: dict[str, Any] = field(default_factory=dict)
    output_type: type[Type] | str | None = None
    input_type: type[Type] | str | None = None
    generation: dict[str, Any] = field(default_factory=dict)


def _resolve(value: type[Type] | str | None, what: str) -> type[Type] | None:
    return import_type(value, what) if isinstance(value, str) else value


def encode_chunk(rows: Sequence[tuple[int, RowPrompt | BadRow]]) -> str:
    """A chunk of ``(index, prompt or BadRow)`` as JSON text."""
    items: list[dict[str, Any]] = []
    for index, row in rows:
        if isinstance(row, BadRow):
            items.append({"index": index, "error": row.reason})
        elif isinstance(row, Type):
            items.append({"index": index, "fields": row.model_dump(mode="json")})
        else:
            items.append({"index": index, "prompt": row})
    return json.dumps(items, ensure_ascii=False)


def decode_chunk(text: str, input_type: type[Type] | None) -> list[tuple[int, RowPrompt | BadRow]]:
    """The inverse of :func:`encode_chunk`."""
    rows: list[tuple[int, RowPrompt | BadRow]] = []
    for item in json.loads(text):
        index = int(item["index"])
        if "error" in item:
            rows.append((index, BadRow(item["error"])))
        elif "fields" in item:
            if input_type is None:
                raise InvalidInputError("a chunk holds typed rows but the worker has no input type")
            rows.append((index, input_type.model_validate(item["fields"])))
        else:
            rows.append((index, item["prompt"]))
    return rows


class ChunkWorker:
    """Loads the runner once; answers chunks of rows with it (see the module doc)."""

    def __init__(self, spec: BatchSpec, runner: ModelRunner | None = None) -> None:
        from llmrun.registry import load

        self.spec = spec
        self.output_type = _resolve(spec.output_type, "output type")
        self.input_type = _resolve(spec.input_type, "input type")
        self.runner = runner if runner is not None else load(spec.model, spec.backend, **spec.load_options)

    def answer(self, chunk: str) -> list[Record]:
        """Answer an encoded chunk (see :func:`encode_chunk`): one record per row, in order."""
        return self.process(decode_chunk(chunk, self.input_type))

    def process(self, rows: Sequence[tuple[int, RowPrompt | BadRow]]) -> list[Record]:
        """One record per row: the chunk's good rows go through the runner in one call.

        When some rows fail for a reason that belongs to them (a prompt too long, an output
        that does not fit the schema), the runner's :class:`~llmrun.errors.BatchError` keeps
        the others' answers; a call that fails as a whole for such a reason is asked again one
        row at a time, so each gets its own answer or error. Any other error (the backend is
        down) stops the job.
        """
        records: dict[int, Record] = {}
        good: list[tuple[int, RowPrompt]] = []
        for index, row in rows:
            if isinstance(row, BadRow):
                records[index] = _failed(index, row.reason)
            else:
                good.append((index, row))
        if good:
            try:
                results = self._run([p for _, p in good])
            except BatchError as batch:  # the runner kept the good rows and named each failed one
                if not all(isinstance(e, ROW_ERRORS) for e in batch.failures.values()):
                    raise
                for position, (index, _) in enumerate(good):
                    error = batch.failures.get(position)
                    records[index] = (
                        _answered(index, batch.results[position])
                        if error is None
                        else _failed(index, f"{type(error).__name__}: {error}")
                    )
            except ROW_ERRORS:
                for index, prompt in good:
                    try:
                        records[index] = _answered(index, self._run([prompt])[0])
                    except ROW_ERRORS as exc:
                        records[index] = _failed(index, f"{type(exc).__name__}: {exc}")
            else:
                for (index, _), result in zip(good, results, strict=True):
                    records[index] = _answered(index, result)
        return [records[index] for index, _ in rows]

    def _run(self, prompts: list[RowPrompt]) -> list[RunResult[Any]]:
        return self.runner.run(prompts, self.output_type, **self.spec.generation)


def _answered(index: int, result: RunResult[Any]) -> Record:
    output = result.output.model_dump(mode="json") if isinstance(result.output, Type) else result.output
    return {
        "index": index,
        "output": output,
        "error": None,
        "finish_reason": result.finish_reason,
        "prompt_tokens": result.usage.prompt_tokens,
        "completion_tokens": result.usage.completion_tokens,
    }


def _failed(index: int, reason: str) -> Record:
    return {
        "index": index,
        "output": None,
        "error": reason,
        "finish_reason": None,
        "prompt_tokens": None,
        "completion_tokens": None,
    }
