"""2023's batch inference jobs (``submit_inference_job``, ``check_job_status``,
``get_job_results``, ``cancel_job``).

Locally a job runs in a background thread of the facade (one job at a time, in
chunks, so its status shows progress and a cancel stops it between chunks).
On Lamini a job is a batch on its ``/v1/batch_completions`` API, which has no
cancel. Statuses are 2023's: ``SCHEDULED``, ``RUNNING``, ``DONE``, ``ERRORED``,
``CANCELED``.
"""

from __future__ import annotations

import itertools
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from llmrun.errors import BackendError, InvalidInputError, UnsupportedFeatureError
from llmrun.runner import ModelRunner
from llmrun.schema import Type, check_output_type

if TYPE_CHECKING:
    from llmrun.compat.facade import Facade

#: Items a local job generates per step (a cancel takes effect between steps).
CHUNK_SIZE = 8
_ids = itertools.count(1)


@dataclass
class _LocalJob:
    items: list[Any]
    output_type: type[Type] | None
    options: dict[str, Any]
    status: str = "SCHEDULED"
    results: list[Any] = field(default_factory=list)
    error: BaseException | None = None
    cancelled: bool = False


@dataclass(frozen=True)
class _LaminiJob:
    batch_id: str
    total: int
    output_type: type[Type] | None


class InferenceJobs:
    """The inference jobs of one facade."""

    def __init__(self, facade: Facade) -> None:
        self._facade = facade
        self._local: dict[str, _LocalJob] = {}
        self._lamini: dict[str, _LaminiJob] = {}
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        #: The id of the last job submitted here.
        self.last: str | None = None

    def submit(self, inputs: Any, output_type: type[Type] | None, options: dict[str, Any]) -> dict[str, str]:
        """Start a job over ``inputs`` (one or a list); returns ``{"job_id", "status"}``."""
        items = list(inputs) if isinstance(inputs, list | tuple) else [inputs]
        if output_type is not None:
            output_type = check_output_type(output_type)
        # Check everything a call would check, now rather than in the background.
        request, _ = self._facade._prepare(items, output_type, dict(options))
        job_id = self.last = f"job-{next(_ids)}"
        if self._facade.backend_name == "lamini":
            from llmrun.backends.lamini.wire_types import lamini_output_type
            from llmrun.compat.lamini_client import credentials_from, submit_batch

            wire = lamini_output_type(output_type) if output_type is not None else None
            creds = credentials_from(self._facade._load_options)
            batch = submit_batch(
                creds, self._facade.model_name, list(request.prompts), wire, request.max_new_tokens
            )
            self._lamini[job_id] = _LaminiJob(batch, len(items), output_type)
            return {"job_id": job_id, "status": "SCHEDULED"}
        job = _LocalJob(items, output_type, dict(options))
        with self._lock:
            self._local[job_id] = job
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llmrun-jobs")
            self._executor.submit(self._run, job)
        return {"job_id": job_id, "status": job.status}

    def _run(self, job: _LocalJob) -> None:
        with self._lock:
            if job.cancelled:
                return
            job.status = "RUNNING"
        try:
            for start in range(0, len(job.items), CHUNK_SIZE):
                if job.cancelled:
                    return
                chunk = job.items[start : start + CHUNK_SIZE]
                # options are translated and 2023 templates filled at submission: the plain llmrun call
                out = ModelRunner.generate(self._facade, chunk, job.output_type, **job.options)
                with self._lock:
                    job.results.extend(out)
        except Exception as exc:  # reported through check_job_status / get_job_results
            with self._lock:
                job.error = exc
                if not job.cancelled:
                    job.status = "ERRORED"
            return
        with self._lock:
            if not job.cancelled:
                job.status = "DONE"

    def status(self, job_id: str) -> dict[str, Any]:
        """2023's status dict: ``status`` and ``progress`` (and ``error`` for an ERRORED job)."""
        if job_id in self._lamini:
            job = self._lamini[job_id]
            done = self._lamini_outputs(job)
            state = "DONE" if len(done) == job.total else ("RUNNING" if done else "SCHEDULED")
            return {"status": state, "progress": f"{len(done)} of {job.total} done", "job_id": job_id}
        job_l = self._local_job(job_id)
        with self._lock:
            reply: dict[str, Any] = {
                "job_id": job_id,
                "status": job_l.status,
                "progress": f"{len(job_l.results)} of {len(job_l.items)} done",
            }
            if job_l.error is not None:
                reply["error"] = f"{type(job_l.error).__name__}: {job_l.error}"
        return reply

    def results(self, job_id: str, output_type: type[Type] | None = None) -> list[Any]:
        """The outputs finished so far, in input order (all of them once the job is DONE)."""
        if job_id in self._lamini:
            job = self._lamini[job_id]
            wanted = output_type or job.output_type
            return [self._parse(o, wanted) for o in self._lamini_outputs(job)]
        job_l = self._local_job(job_id)
        with self._lock:
            if job_l.error is not None:
                raise job_l.error
            return list(job_l.results)

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Stop a local job between chunks (its results so far stay readable); Lamini has no cancel."""
        if job_id in self._lamini:
            raise UnsupportedFeatureError(
                "cancel_job cannot be honoured by the 'lamini' backend: Lamini's batch API has no cancel. "
                "Let the job finish (get_job_results returns what is done so far), or run it locally"
            )
        job = self._local_job(job_id)
        with self._lock:
            job.cancelled = True
            if job.status in ("SCHEDULED", "RUNNING"):
                job.status = "CANCELED"
            return {"job_id": job_id, "status": job.status}

    def shutdown(self) -> None:
        """Cancel pending work and stop the worker thread."""
        with self._lock:
            for job in self._local.values():
                job.cancelled = True
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

    def _local_job(self, job_id: str) -> _LocalJob:
        job = self._local.get(job_id)
        if job is None:
            known = ", ".join([*self._local, *self._lamini]) or "none yet"
            raise InvalidInputError(f"no inference job {job_id!r} was submitted here; known jobs: {known}")
        return job

    def _lamini_outputs(self, job: _LaminiJob) -> list[Any]:
        from llmrun.compat.lamini_client import batch_result, credentials_from

        reply = batch_result(credentials_from(self._facade._load_options), job.batch_id)
        if not reply:
            return []
        outputs, reasons = reply.get("outputs"), reply.get("finish_reason")
        if not isinstance(outputs, list) or not isinstance(reasons, list) or len(outputs) != len(reasons):
            raise BackendError(f"Lamini answered a batch result without matching outputs: {str(reply)[:120]}")
        done = [o for o, r in zip(outputs, reasons, strict=True) if r is not None]
        return done

    @staticmethod
    def _parse(output: Any, output_type: type[Type] | None) -> Any:
        from llmrun.backends.lamini.wire_types import unflatten
        from llmrun.schema import parse_output

        if output_type is None:
            return output.get("output") if isinstance(output, dict) else str(output)
        value = unflatten(output) if isinstance(output, dict) else output
        return parse_output(json.dumps(value), output_type)
