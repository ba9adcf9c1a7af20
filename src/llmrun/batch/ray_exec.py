"""Batch chunks over a Ray cluster: Ray Data ``map_batches`` with one engine per actor.

Each actor (:class:`_RayChunkWorker`) loads the runner once and answers one chunk per call;
the driver receives each chunk's records as they finish and writes them as a part, so a killed
job keeps everything that reached it. ``ray.init()`` starts a local cluster unless an address
of a running one is given (or this process is already connected).
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from llmrun.batch.parts import Record
from llmrun.batch.work import BatchSpec, ChunkWorker
from llmrun.errors import ConfigurationError, DependencyError, LLMRunError

__all__ = ["RayCluster", "check_address"]


def _ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError:
        raise DependencyError('--ray needs Ray Data: pip install "llmrun[ray]"') from None
    return ray


def check_address(address: str) -> None:
    """Fail fast (:class:`~llmrun.errors.ConfigurationError`) when ``host:port`` does not answer."""
    if address in ("", "auto", "local"):
        return
    split = urlsplit(address if "://" in address else f"ray://{address}")
    try:
        host, port = split.hostname, split.port
    except ValueError:
        host, port = None, None
    if not host or port is None:
        raise ConfigurationError(
            f"Ray address {address!r} is not host:port (e.g. 10.0.0.5:6379 or ray://10.0.0.5:10001)"
        )
    try:
        with socket.create_connection((host, port), timeout=5):
            pass
    except OSError as exc:
        raise ConfigurationError(
            f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); start one there with "
            "`ray start --head`, or check the address (ray start prints it)"
        ) from None


class RayCluster:
    """A connection to Ray for the length of a ``with`` block; shuts down only what it started.

    ``address``: ``None`` for a new local cluster (or the one this process is connected to),
    ``"auto"`` for a running local one, else ``host:port`` or ``ray://host:port``.
    """

    def __init__(self, address: str | None = None, *, num_cpus: int | None = None) -> None:
        self.ray = _ray()
        self.address = address or None
        self.num_cpus = num_cpus
        self._started = False

    def __enter__(self) -> RayCluster:
        ray = self.ray
        if ray.is_initialized():
            return self
        if self.address is not None:
            check_address(self.address)
        options: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING}
        if self.address is None and self.num_cpus is not None:
            options["num_cpus"] = self.num_cpus
        try:
            ray.init(address=self.address, **options)
        except (ConnectionError, RuntimeError, TimeoutError) as exc:
            where = self.address or "a new local cluster"
            raise ConfigurationError(f"cannot connect to the Ray cluster at {where}: {exc}") from None
        self._started = True
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._started:
            self.ray.shutdown()

    def resources(self) -> dict[str, float]:
        """The cluster's total resources (``CPU``, ``GPU``, ...)."""
        found: dict[str, float] = self.ray.cluster_resources()
        return found

    def default_actors(self, threads: int, gpus: float) -> int:
        """As many actors as the cluster fits: its GPUs over ``gpus``, else its CPUs over ``threads``."""
        resources = self.resources()
        if gpus > 0:
            return max(1, int(resources.get("GPU", 0) // gpus))
        return max(1, int(resources.get("CPU", 1) // threads))

    def run(
        self,
        spec: BatchSpec,
        chunks: Sequence[tuple[int, str]],
        *,
        actors: int,
        threads: int,
        gpus: float,
    ) -> Iterator[tuple[int, list[Record]]]:
        """Answer encoded chunks ``(part number, chunk)`` on ``actors`` actors; yield parts as they finish."""
        ray = self.ray
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # llmrun's own bar counts rows
        logging.getLogger("ray.data").setLevel(logging.WARNING)  # no per-dataset chatter on stderr
        context.print_on_execution_start = False
        context.raise_original_map_exception = True  # an actor's llmrun error reaches the caller as it is
        context.execution_options.preserve_order = False
        items = [{"part": number, "chunk": chunk} for number, chunk in chunks]
        dataset = ray.data.from_items(items, override_num_blocks=len(items))
        answered = dataset.map_batches(
            _RayChunkWorker,
            fn_constructor_kwargs={"spec": spec, "threads": threads},
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=min(actors, len(items))),
            num_cpus=threads,
            num_gpus=gpus or None,
        )
        try:
            for row in answered.iter_rows():
                yield int(row["part"]), json.loads(row["records"])
        except Exception as exc:
            cause = _llmrun_cause(exc)
            if cause is not None:
                raise cause from None
            raise


class _RayChunkWorker:
    """A Ray Data actor: one runner, loaded once; one chunk per call."""

    def __init__(self, spec: BatchSpec, threads: int) -> None:
        _limit_threads(threads, spec.backend)
        self.worker: ChunkWorker | None = None
        self.failed: LLMRunError | None = None
        try:
            self.worker = ChunkWorker(spec)
        except LLMRunError as exc:
            # Ray keeps only the text of an error raised while an actor starts; raised from a
            # call, the error itself reaches the driver, which re-raises it as it is
            self.failed = exc

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        if self.worker is None:
            assert self.failed is not None  # one of the two is always set
            raise self.failed
        parts = [int(p) for p in batch["part"]]
        records = [json.dumps(self.worker.answer(str(c)), ensure_ascii=False) for c in batch["chunk"]]
        return {"part": np.array(parts, dtype=np.int64), "records": np.array(records, dtype=object)}


def _limit_threads(threads: int, backend: str | None) -> None:
    """Give the actor's torch (when the backend uses it) the threads the actor reserved."""
    if backend not in (None, "local"):
        return
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(threads)


def _llmrun_cause(exc: BaseException) -> LLMRunError | None:
    """The llmrun error an actor raised, from inside Ray's wrappers, if there is one."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, LLMRunError) and type(current).__module__.startswith("llmrun"):
            return current
        todo += [current.__cause__, current.__context__, getattr(current, "cause", None)]
    return None
