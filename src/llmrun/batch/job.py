"""``run_batch``: a file of rows through a model, in one process or over a Ray cluster, resumable."""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmrun.batch.parts import PartStore, Record, output_format, read_output, write_output
from llmrun.batch.rows import BadRow, RowPrompt, import_type, read_rows, type_path
from llmrun.batch.work import BatchSpec, ChunkWorker, encode_chunk
from llmrun.errors import ConfigurationError, InvalidInputError
from llmrun.generation import GenerationConfig
from llmrun.runner import ModelRunner
from llmrun.schema import Type, output_json_schema

__all__ = ["BatchSummary", "run_batch"]


@dataclass(frozen=True)
class BatchSummary:
    """What a batch job did: ``rows`` in the output, ``errors`` among them, ``skipped`` rows
    finished by an earlier run of a resumed job, and the wall time of this run."""

    output: Path
    rows: int
    errors: int
    skipped: int
    seconds: float


def run_batch(
    model: str | ModelRunner,
    input: str | Path,
    output: str | Path,
    *,
    output_type: type[Type] | str | None = None,
    input_type: type[Type] | str | None = None,
    input_key: str = "input",
    backend: str | None = None,
    overwrite: bool = False,
    resume: bool = False,
    chunk_size: int = 32,
    ray: bool | str = False,
    actors: int | None = None,
    threads_per_actor: int = 1,
    gpus_per_actor: float = 0,
    progress: bool | Callable[[int], None] = True,
    generation: Mapping[str, Any] | None = None,
    **load_options: Any,
) -> BatchSummary:
    """Generate one output per row of ``input`` (JSON lines, CSV or Parquet) into ``output``.

    Each row's prompt is ``row[input_key]`` (or the row validated into ``input_type``); each
    output row holds its ``index``, the ``output`` (a validated ``output_type`` object as a
    dict, or text), ``finish_reason`` and token counts, or the ``error`` that row met (a
    malformed row, a prompt too long, an answer outside the schema), in input order. Rows go
    through ``runner.run`` in chunks of ``chunk_size``; finished chunks are kept as parts, so a
    killed job rerun with ``resume=True`` redoes only what was missing. ``ray=True`` (or a
    cluster address) spreads the chunks over ``actors`` Ray actors, each owning one engine with
    ``threads_per_actor`` CPUs (or ``gpus_per_actor`` GPUs); greedy results are the same either
    way. ``progress``: a progress bar on stderr, or a callable given the number of rows of each
    part as it is saved. ``generation``: options for every call (``max_new_tokens``, ``temperature``, ...);
    other keyword arguments go to :func:`llmrun.load` (``device``, ``dtype``, ...). ``model`` may
    also be a runner already loaded (one process only: Ray actors load their own).
    """
    started = time.perf_counter()
    runner = model if isinstance(model, ModelRunner) else None
    if runner is not None:
        if ray is not False or load_options or backend is not None:
            raise ConfigurationError(
                "a loaded runner runs in this process only: pass the model's name (and backend, options) "
                "instead to run on Ray or with load options"
            )
        model, backend = runner.model_name, runner.backend_name
    if not isinstance(model, str) or not model.strip():
        raise ConfigurationError(f"model must be a model name or a llmrun runner, got {model!r}")
    source, target = Path(input), Path(output)
    output_format(target)
    _check_flags(overwrite, resume, chunk_size, actors, threads_per_actor, gpus_per_actor, ray)
    out_type = import_type(output_type, "output type") if isinstance(output_type, str) else output_type
    in_type = import_type(input_type, "input type") if isinstance(input_type, str) else input_type
    gen = {k: v for k, v in dict(generation or {}).items() if v is not None}
    GenerationConfig().merged(**gen)  # unknown or invalid options fail here, not once per row
    store = PartStore(target)
    if target.exists() and not (overwrite or resume):
        raise ConfigurationError(
            f"{target} exists; pass --overwrite (overwrite=True) to replace it, "
            "or --resume (resume=True) to finish an interrupted job"
        )
    if store.exists() and not (overwrite or resume):
        raise ConfigurationError(
            f"an unfinished job left its parts in {store.folder}; pass --resume (resume=True) to "
            "continue it, or --overwrite (overwrite=True) to start over"
        )
    if resume and target.exists() and not store.exists():
        records = read_output(target)  # finished already: nothing to redo
        errors = sum(r["error"] is not None for r in records)
        return BatchSummary(target, len(records), errors, len(records), time.perf_counter() - started)

    data = read_rows(source, input_key=input_key, input_type=in_type)
    job = _job(model, backend, load_options, out_type, in_type, input_key, gen, data.digest, chunk_size)
    job["rows"] = len(data.rows)
    spec = BatchSpec(
        model,
        backend,
        dict(load_options),
        _portable(out_type),
        _portable(in_type),
        gen,
    )
    indexed = list(enumerate(data.rows))
    chunks = [indexed[start : start + chunk_size] for start in range(0, len(indexed), chunk_size)]
    if ray is not False:
        from llmrun.batch.ray_exec import RayCluster

        _check_backend(spec)
        address = None if ray is True else str(ray)
        with RayCluster(address) as cluster:
            done = _begin(store, job, resume)
            pending = [(n, encode_chunk(c)) for n, c in enumerate(chunks) if n not in done]
            threads = threads_per_actor
            count = actors or cluster.default_actors(threads, gpus_per_actor)
            parts = (
                cluster.run(spec, pending, actors=count, threads=threads, gpus=gpus_per_actor)
                if pending
                else iter(())
            )
            skipped = _write_parts(store, parts, chunks, done, progress)
    else:
        worker = ChunkWorker(spec, runner)  # loads the model before anything is written
        done = _begin(store, job, resume)
        local = ((n, worker.process(c)) for n, c in enumerate(chunks) if n not in done)
        skipped = _write_parts(store, local, chunks, done, progress)
    records = store.records(len(data.rows))
    write_output(target, records)
    store.clear()
    errors = sum(r["error"] is not None for r in records)
    return BatchSummary(target, len(records), errors, skipped, time.perf_counter() - started)


def _check_flags(
    overwrite: bool,
    resume: bool,
    chunk_size: int,
    actors: int | None,
    threads: int,
    gpus: float,
    ray: bool | str,
) -> None:
    if overwrite and resume:
        raise ConfigurationError("pass either --overwrite or --resume, not both")
    for name, flag in (("overwrite", overwrite), ("resume", resume)):
        if not isinstance(flag, bool):
            raise ConfigurationError(f"{name} must be True or False, got {flag!r}")
    if not isinstance(ray, bool | str):
        raise ConfigurationError(f"ray must be True, False or a cluster address, got {ray!r}")
    for name, value in (("chunk_size", chunk_size), ("threads_per_actor", threads)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigurationError(f"{name}={value!r} is invalid: use a positive integer")
    if actors is not None and (isinstance(actors, bool) or not isinstance(actors, int) or actors < 1):
        raise ConfigurationError(f"actors={actors!r} is invalid: use a positive integer")
    if isinstance(gpus, bool) or not isinstance(gpus, int | float) or gpus < 0:
        raise ConfigurationError(f"gpus_per_actor={gpus!r} is invalid: use a number >= 0 (e.g. 1)")


def _check_backend(spec: BatchSpec) -> None:
    """Before any actor starts: the backend exists and takes these options."""
    from llmrun.config import read_config_file, resolve_backend_and_model, resolve_options
    from llmrun.registry import get_backend

    settings = read_config_file()
    name, _ = resolve_backend_and_model(spec.backend, spec.model, settings)
    resolve_options(get_backend(name), name, dict(spec.load_options), settings)


def _portable(cls: type[Type] | None) -> type[Type] | str | None:
    """A type as ``module:Class`` when that imports back to it (so actors import it), else the class."""
    if cls is None or "<locals>" in cls.__qualname__ or cls.__module__ == "__main__":
        return cls
    return type_path(cls)


def _job(
    model: str,
    backend: str | None,
    load_options: Mapping[str, Any],
    out_type: type[Type] | None,
    in_type: type[Type] | None,
    input_key: str,
    generation: Mapping[str, Any],
    digest: str,
    chunk_size: int,
) -> dict[str, Any]:
    """The settings that decide a job's results; a resumed job must match them."""

    def schema_of(cls: type[Type] | None) -> str | None:
        if cls is None:
            return None
        schema = json.dumps(output_json_schema(cls), sort_keys=True)
        return f"{type_path(cls)}#{hashlib.sha256(schema.encode()).hexdigest()[:16]}"

    return {
        "model": model,
        "backend": backend,
        "load_options": json.loads(json.dumps(dict(load_options), sort_keys=True, default=str)),
        "output_type": schema_of(out_type),
        "input_type": schema_of(in_type),
        "input_key": None if in_type is not None else input_key,
        "generation": json.loads(json.dumps(dict(generation), sort_keys=True, default=str)),
        "input_sha256": digest,
        "chunk_size": chunk_size,
    }


def _begin(store: PartStore, job: dict[str, Any], resume: bool) -> set[int]:
    """Start the parts folder (or check a resumed one); the numbers of the parts already done."""
    if resume and store.exists():
        store.check_same_job(job)
        return store.done()
    store.start(job)
    return set()


def _write_parts(
    store: PartStore,
    parts: Iterator[tuple[int, list[Record]]],
    chunks: list[list[tuple[int, RowPrompt | BadRow]]],
    done: set[int],
    progress: bool | Callable[[int], None],
) -> int:
    """Write each finished part as it comes, with a progress bar; the rows done before this run."""
    skipped = sum(len(chunks[n]) for n in done)
    total = sum(len(c) for c in chunks)
    bar = _progress_bar(total, skipped, progress is True)
    report = progress if callable(progress) else None
    try:
        for number, records in parts:
            if number in done:
                raise InvalidInputError(f"part {number} came back twice")  # never silently duplicated
            store.write(number, records)
            done.add(number)
            if bar is not None:
                bar.update(len(records))
            if report is not None:
                report(len(records))
    finally:
        if bar is not None:
            bar.close()
    return skipped


def _progress_bar(total: int, initial: int, enabled: bool) -> Any:
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=initial, unit="row", desc="llmrun batch", file=sys.stderr)
