"""Fine-tuning on Lamini: upload the pairs, start the job, poll it, cancel it, read its evaluation.

The requests are the ones ``lamini.Lamini.train`` sends (``GET
/v1/get-upload-base-path``, ``POST /v1/local-data``, ``POST
/v1/existing-data``, ``POST /v1/train``; or, where Lamini stores data in
Azure, ``POST /v1/data``, the blob upload and ``POST
/v1/data/num-datapoints``), sent through the client's request function by
:class:`~llmrun.backends.lamini.transport.Transport`, so they get its timeout,
retries and error mapping. Not through ``Lamini.train`` itself, which prints to
stdout and has neither, and not through ``Lamini.train_and_wait``, which polls
every 30 s and swallows Ctrl-C. Here the poll interval is an option, progress
goes to logging (and a tqdm line when asked for) and Ctrl-C cancels the job on
the server before it is re-raised.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from llmrun.backends.lamini.api import LaminiApi, field, job_list, reply_shape
from llmrun.backends.lamini.uploads import upload_examples
from llmrun.errors import (
    BackendError,
    LLMRunError,
    RequestTimeoutError,
    TrainingError,
    UnsupportedFeatureError,
)
from llmrun.training import TrainingExample, TrainOptions, TrainResult

logger = logging.getLogger("llmrun.backends.lamini")

#: Seconds between two status requests unless the runner says otherwise.
DEFAULT_POLL_INTERVAL = 5.0
#: Seconds ``train()`` waits for a tuning job to end before it raises :class:`TuningTimeoutError`.
DEFAULT_WAIT_TIMEOUT = 24 * 3600.0
#: Statuses of a job that is still on its way (any other unknown status is logged once, then waited on).
RUNNING_STATUSES = frozenset({"CREATED", "SCHEDULED", "QUEUED", "PENDING", "LOADING", "RUNNING", "TRAINING"})
#: Job statuses that mean the tuned model exists.
COMPLETED_STATUSES = frozenset({"COMPLETED", "PARTIALLY COMPLETED"})
FAILED_STATUSES = frozenset({"FAILED"})
CANCELLED_STATUSES = frozenset({"CANCELLED", "CANCELED"})
TERMINAL_STATUSES = COMPLETED_STATUSES | FAILED_STATUSES | CANCELLED_STATUSES
#: Keys of a job status object that may explain a failure, most specific first.
_MESSAGE_KEYS = ("message", "detail", "error", "error_message", "failure_reason", "reason", "status_message")
#: ``TrainOptions`` fields sent as Lamini ``finetune_args`` (same names on both sides).
MAPPED_OPTIONS = ("max_steps", "learning_rate")
#: ``TrainOptions`` fields that Lamini cannot honour: setting them raises UnsupportedFeatureError.
REFUSED_OPTIONS = ("method", "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules", "resume")
#: ``TrainOptions`` fields this module reads itself (``poll_interval``/``progress`` if they exist).
USED_OPTIONS = ("num_samples", "poll_interval", "progress", "is_public")
#: ``TrainOptions`` fields that only set up llmrun's own local training loop; not Lamini's
#: concern, so they are left alone without a warning.
LOCAL_LOOP_OPTIONS = (
    "gradient_accumulation_steps", "warmup_ratio", "weight_decay", "max_grad_norm", "bf16",
    "gradient_checkpointing", "save_every_steps", "keep_checkpoints", "log_every_steps",
    "eval_max_examples", "eval_max_new_tokens",
)  # fmt: skip

T = TypeVar("T")


class TuningTimeoutError(TrainingError):
    """A Lamini tuning job did not end within ``wait_timeout``; it may still be running on the server.

    ``job_id`` is the job and ``status`` its last status. Wait again with
    ``runner.wait_for_job(job_id)``.
    """

    def __init__(self, message: str, job_id: str, status: str) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.status = status


class TuningJobError(TrainingError):
    """A Lamini tuning job ended without a model (FAILED or CANCELLED).

    ``job_id`` is the job, ``status`` its last status and ``detail`` the
    server's message (None when it gave none).
    """

    def __init__(self, message: str, job_id: str, status: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class TuningJob:
    """A tuning job this runner started (or found), as far as llmrun needs it."""

    job_id: str
    base_model: str
    status: str
    model_name: str | None = None
    dataset_id: str | None = None
    num_samples: int = 3


# --------------------------------------------------------------------------- options
def finetune_args(options: TrainOptions) -> dict[str, Any]:
    """Check ``options`` for Lamini and return the ``finetune_args`` to send.

    ``max_steps`` and ``learning_rate`` are sent when set. Asking for a tuning
    method or LoRA settings, or ``resume=True``, raises
    :class:`UnsupportedFeatureError`: Lamini picks its tuning method itself and
    has no local run to resume. Settings of the local training loop
    (:data:`LOCAL_LOOP_OPTIONS`: checkpoints, bf16, warmup...) are not Lamini's
    and are left alone; any other setting changed from its default (epochs,
    batch size, eval split...) has no Lamini counterpart and is ignored with one
    logged warning naming them.
    """
    defaults = TrainOptions()
    changed = {
        f.name: getattr(options, f.name)
        for f in dataclasses.fields(options)
        if getattr(options, f.name) != getattr(defaults, f.name)
    }
    refused = [name for name in REFUSED_OPTIONS if name in changed]
    if refused:
        settings = ", ".join(f"{name}={changed[name]!r}" for name in refused)
        raise UnsupportedFeatureError(
            f"training option(s) {settings} cannot be honoured on Lamini"
            + (" (lora=True/False sets method)" if "method" in refused else "")
            + ": Lamini chooses its tuning method and adapter settings itself and has no local run "
            "to resume. Drop them, or fine-tune with backend 'local'"
        )
    ignored = sorted(set(changed) - set(MAPPED_OPTIONS) - set(USED_OPTIONS) - set(LOCAL_LOOP_OPTIONS))
    if ignored:
        logger.warning(
            "Lamini ignores training option(s) %s: they have no counterpart in Lamini's tuning API "
            "(only %s are sent)",
            ", ".join(ignored),
            " and ".join(MAPPED_OPTIONS),
        )
    return {name: changed[name] for name in MAPPED_OPTIONS if name in changed}


# --------------------------------------------------------------------------- training
def start_job(
    api: LaminiApi, model_name: str, dataset_id: str, args: Mapping[str, Any], is_public: bool | None = None
) -> str:
    """Start tuning ``model_name`` on an uploaded dataset; return the job id."""
    base = field(
        api.call("GET", "/v1/get-upload-base-path"), "upload_base_path", "GET /v1/get-upload-base-path"
    )
    existing = api.call("POST", "/v1/existing-data", {"dataset_id": dataset_id, "upload_base_path": base})
    body: dict[str, Any] = {"model_name": model_name, "dataset_id": dataset_id}
    location = existing.get("dataset_location") if isinstance(existing, dict) else None
    if location is not None:
        body["upload_file_path"] = location
    if args:
        body["finetune_args"] = dict(args)
    if is_public is not None:
        body["is_public"] = is_public
    # POST /v1/train is not idempotent: after a lost reply, a blind retry would start a second job.
    # Look for a job on this dataset that was not there before; retry only when there is none.
    before = {str(j["job_id"]) for j in job_list(api.call("GET", "/v1/train/jobs"))}

    def started(jobs: Any) -> dict[str, Any] | None:
        new = [
            j
            for j in job_list(jobs)
            if str(j["job_id"]) not in before and j.get("dataset_id") in (None, dataset_id)
        ]
        if new:
            logger.warning("POST /v1/train failed, but it had started job %s: using it", new[-1]["job_id"])
        return new[-1] if new else None

    try:
        reply = api.call("POST", "/v1/train", body, idempotent=False, recover=("/v1/train/jobs", started))
    except RequestTimeoutError as error:  # not retried: the job may exist, or appear later
        _append(
            error, f" (the tuning job may have started anyway: look at {api.url}/tune before training again)"
        )
        raise
    job_id = field(reply, "job_id", "POST /v1/train", kinds=(int, str))
    logger.info(
        "Started Lamini tuning job %s for %s; follow it at %s/tune/%s", job_id, model_name, api.url, job_id
    )
    return str(job_id)


@dataclass(frozen=True)
class JobOutcome:
    """How waiting for a job ended: its last status object, and how many polls and seconds it took."""

    status: dict[str, Any]
    polls: int
    seconds: float


def wait_for_job(
    api: LaminiApi,
    job_id: str,
    poll_interval: float,
    *,
    progress: bool = False,
    timeout: float = DEFAULT_WAIT_TIMEOUT,
) -> JobOutcome:
    """Poll ``GET /v1/train/jobs/{job_id}`` every ``poll_interval`` seconds until the job ends.

    Each new status is logged (INFO; a status llmrun does not know, WARNING), every
    poll at DEBUG; ``progress`` adds a tqdm line with the status and the elapsed time.
    Returns on any terminal status; the caller decides what a FAILED or CANCELLED job
    means. A job still not ended after ``timeout`` seconds (stuck in RUNNING, or in a
    status that never ends) raises :class:`TuningTimeoutError`; the job is left running.
    """
    start = time.monotonic()
    polls = 0
    last: str | None = None
    with _status_line(job_id, progress) as show:
        while True:
            status = api.call("GET", f"/v1/train/jobs/{job_id}")
            polls += 1
            if not isinstance(status, dict) or not isinstance(status.get("status"), str):
                raise BackendError(
                    f"Lamini answered GET /v1/train/jobs/{job_id} with {reply_shape(api, status)}; "
                    'expected an object with a "status" string',
                    status_code=200,
                )
            name = status["status"].upper()
            elapsed = time.monotonic() - start
            if name != last:
                known = name in RUNNING_STATUSES | TERMINAL_STATUSES
                logger.log(
                    logging.INFO if known else logging.WARNING,
                    "Lamini tuning job %s: %s (%.1fs)%s",
                    job_id, name, elapsed, "" if known else "; llmrun does not know this status, waiting on",
                )  # fmt: skip
                last = name
            logger.debug("Lamini tuning job %s poll %d: %s", job_id, polls, name)
            show(name)
            if name in TERMINAL_STATUSES:
                return JobOutcome(status, polls, elapsed)
            if elapsed + poll_interval > timeout:
                raise TuningTimeoutError(
                    f"Lamini tuning job {job_id} is still {name} after {elapsed:.0f}s of "
                    f"wait_timeout={timeout:g}s; it is left running on Lamini. Wait for it again with "
                    f"runner.wait_for_job({job_id!r}) (raise wait_timeout= to wait longer), "
                    f"follow it at {api.url}/tune/{job_id}, or cancel it there",
                    job_id,
                    name,
                )
            time.sleep(poll_interval)


@contextlib.contextmanager
def _status_line(job_id: str, enabled: bool) -> Iterator[Callable[[str], None]]:
    if not enabled:
        yield lambda _status: None
        return
    from tqdm.auto import tqdm

    bar = tqdm(total=None, desc=f"Lamini job {job_id}", bar_format="{desc}: {postfix} [{elapsed}]")
    try:
        yield lambda status: bar.set_postfix_str(status)
    finally:
        bar.close()


def cancel_job(api: LaminiApi, job_id: str) -> bool:
    """Ask Lamini to cancel ``job_id``; True when it did. A failure is logged, not raised."""
    try:
        api.call("POST", f"/v1/train/jobs/{job_id}/cancel", {})
    except LLMRunError as exc:
        logger.warning(
            "Could not cancel Lamini tuning job %s (%s); cancel it at %s/tune/%s",
            job_id,
            exc,
            api.url,
            job_id,
        )
        return False
    logger.warning("Cancelled Lamini tuning job %s", job_id)
    return True


def train_on_lamini(
    api: LaminiApi,
    model_name: str,
    examples: Sequence[TrainingExample],
    options: TrainOptions,
    *,
    poll_interval: float,
    progress: bool,
    wait_timeout: float = DEFAULT_WAIT_TIMEOUT,
) -> tuple[TrainResult, TuningJob]:
    """Upload, start, wait; return the result and the job. See the module docstring.

    A FAILED or CANCELLED job raises :class:`TuningJobError`, one not ended within
    ``wait_timeout`` :class:`TuningTimeoutError`; Ctrl-C while waiting cancels the
    job on the server and re-raises KeyboardInterrupt.
    """
    if not examples:
        raise TrainingError("no training examples; load data before calling train()")
    args = finetune_args(options)
    poll_interval = _option(options, "poll_interval", poll_interval)
    progress = bool(_option(options, "progress", progress))
    dataset_id = upload_examples(api, examples)
    job_id = start_job(api, model_name, dataset_id, args, _option(options, "is_public", None))
    job = TuningJob(job_id, model_name, "CREATED", None, dataset_id, options.num_samples)
    return await_job(
        api,
        job,
        poll_interval=poll_interval,
        progress=progress,
        wait_timeout=wait_timeout,
        cancel_on_interrupt=True,
        metrics={"num_examples": len(examples)},
    )


def await_job(
    api: LaminiApi,
    job: TuningJob,
    *,
    poll_interval: float,
    progress: bool,
    wait_timeout: float,
    cancel_on_interrupt: bool,
    metrics: Mapping[str, Any] | None = None,
) -> tuple[TrainResult, TuningJob]:
    """Wait for ``job`` to end (see :func:`wait_for_job`) and turn its outcome into a result.

    ``cancel_on_interrupt``: Ctrl-C cancels the job on the server (for a job this call
    started; a job waited on again is left alone).
    """
    job_id = job.job_id
    try:
        outcome = wait_for_job(api, job_id, poll_interval, progress=progress, timeout=wait_timeout)
    except KeyboardInterrupt as interrupt:
        if cancel_on_interrupt and cancel_job(api, job_id):
            interrupt.add_note(f"llmrun cancelled Lamini tuning job {job_id}")
        raise
    except TuningTimeoutError:
        raise
    except LLMRunError as error:
        _append(
            error,
            f" (while waiting for Lamini tuning job {job_id}, which may still be running: "
            f"{api.url}/tune/{job_id}; wait again with runner.wait_for_job({job_id!r}))",
        )
        raise
    status = outcome.status
    name = str(status["status"]).upper()
    if name not in COMPLETED_STATUSES:
        detail = _message(api, status)
        verb = "failed" if name in FAILED_STATUSES else "was cancelled"
        raise TuningJobError(
            f"Lamini tuning job {job_id} {verb} ({name}): {detail or 'the server gave no reason'}",
            job_id,
            name,
            detail,
        )
    tuned = status.get("model_name")
    if not isinstance(tuned, str) or not tuned:
        raise TuningJobError(
            f"Lamini tuning job {job_id} is {name} but names no tuned model",
            job_id,
            name,
            _message(api, status),
        )
    if name != "COMPLETED":
        logger.warning(
            "Lamini tuning job %s ended %s: %s", job_id, name, _message(api, status) or "no details"
        )
    logger.info("Lamini tuning job %s completed: tuned model %s", job_id, tuned)
    job = dataclasses.replace(job, status=name, model_name=tuned)
    result = TrainResult(
        model_name=tuned,
        status="completed",
        job_id=job_id,
        metrics={**(metrics or {}), "status_polls": outcome.polls, "wait_seconds": outcome.seconds},
    )
    return result, job


# --------------------------------------------------------------------------- helpers
def _message(api: LaminiApi, status: Mapping[str, Any]) -> str | None:
    for key in _MESSAGE_KEYS:
        value = status.get(key)
        if isinstance(value, str) and value.strip():
            return api.redact(value.strip())
        if isinstance(value, dict | list) and value:
            return api.redact(json.dumps(value)[:500])
    return None


def _option(options: TrainOptions, name: str, fallback: Any) -> Any:
    """A TrainOptions field that may not exist yet (``poll_interval``, ``progress``); None means unset."""
    value = getattr(options, name, None)
    return fallback if value is None else value


def _append(error: BaseException, note: str) -> None:
    error.args = ((str(error.args[0]) if error.args else "") + note, *error.args[1:])
