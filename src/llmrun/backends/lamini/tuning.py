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
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp

from llmrun.backends.lamini.sync import run_sync
from llmrun.backends.lamini.transport import Transport
from llmrun.errors import (
    BackendError,
    LLMRunError,
    ServiceUnavailableError,
    TrainingError,
    UnsupportedFeatureError,
)
from llmrun.training import (
    EvalResult,
    EvalSample,
    TrainingExample,
    TrainOptions,
    TrainResult,
    completions_match,
)

logger = logging.getLogger("llmrun.backends.lamini")

#: Seconds between two status requests unless the runner says otherwise.
DEFAULT_POLL_INTERVAL = 5.0
#: Job statuses that mean the tuned model exists.
COMPLETED_STATUSES = frozenset({"COMPLETED", "PARTIALLY COMPLETED"})
FAILED_STATUSES = frozenset({"FAILED"})
CANCELLED_STATUSES = frozenset({"CANCELLED", "CANCELED"})
#: Keys of a job status object that may explain a failure, most specific first.
_MESSAGE_KEYS = ("message", "detail", "error", "error_message", "failure_reason", "reason", "status_message")
#: ``TrainOptions`` fields sent as Lamini ``finetune_args`` (same names on both sides).
MAPPED_OPTIONS = ("max_steps", "learning_rate")
#: ``TrainOptions`` fields that Lamini cannot honour: setting them raises UnsupportedFeatureError.
REFUSED_OPTIONS = ("method", "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules", "resume")
#: ``TrainOptions`` fields this module reads itself (``poll_interval``/``progress`` if they exist).
USED_OPTIONS = ("num_samples", "poll_interval", "progress")
#: ``TrainOptions`` fields that only set up llmrun's own local training loop; not Lamini's
#: concern, so they are left alone without a warning.
LOCAL_LOOP_OPTIONS = (
    "gradient_accumulation_steps",
    "warmup_ratio",
    "weight_decay",
    "max_grad_norm",
    "bf16",
    "gradient_checkpointing",
    "save_every_steps",
    "keep_checkpoints",
    "log_every_steps",
    "eval_max_examples",
    "eval_max_new_tokens",
)

T = TypeVar("T")


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


class LaminiApi:
    """Blocking calls to the Lamini API through a :class:`Transport`, inside or outside an event loop."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    @property
    def url(self) -> str:
        return self.transport.credentials.url

    def redact(self, text: str) -> str:
        """``text`` without the API key."""
        return self.transport.credentials.key.redact(text)

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """Send one request (with the transport's timeout and retries) and return the decoded reply."""
        return run_sync(lambda: self._call(method, path, body))

    async def _call(self, method: str, path: str, body: Any) -> Any:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as session:
            return await self.transport.call(session, method, path, body)


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
def upload_examples(api: LaminiApi, examples: Sequence[TrainingExample]) -> str:
    """Upload ``examples`` as Lamini ``{"input", "output"}`` pairs; return the dataset id.

    ``input`` is the rendered prompt and ``output`` the completion without the
    local separator (Lamini applies its own prompt format).
    """
    pairs = [{"input": e.prompt, "output": e.completion} for e in examples]
    base = _field(
        api.call("GET", "/v1/get-upload-base-path"), "upload_base_path", "GET /v1/get-upload-base-path"
    )
    if base == "azure":
        reply = api.call("POST", "/v1/data", {"upload_base_path": base})
        dataset_id = _field(reply, "dataset_id", "POST /v1/data")
        location = _field(reply, "dataset_location", "POST /v1/data")
        _upload_to_blob(api, pairs, location)
        api.call("POST", "/v1/data/num-datapoints", {"num_datapoints": len(pairs), "dataset_id": dataset_id})
    else:
        reply = api.call("POST", "/v1/local-data", {"upload_base_path": base, "data": pairs})
        dataset_id = _field(reply, "dataset_id", "POST /v1/local-data")
    logger.info("Uploaded %d training pairs to Lamini as dataset %s", len(pairs), dataset_id)
    return dataset_id


def _upload_to_blob(api: LaminiApi, pairs: list[dict[str, str]], location: str) -> None:
    """Put the pairs as JSON lines at the signed blob URL Lamini gave (as the client's ``upload_to_blob``).

    The URL carries a signature, so it appears in no log line or error.
    """
    from azure.core.exceptions import AzureError, HttpResponseError
    from azure.storage.blob import BlobClient

    data = "".join(json.dumps(p) + "\n" for p in pairs).encode("utf-8")
    try:
        blob = BlobClient.from_blob_url(blob_url=location)
        if blob.exists():
            logger.info("Lamini already holds this dataset; not uploading it again")
            return
        blob.upload_blob(data)
    except HttpResponseError as exc:
        raise ServiceUnavailableError(
            f"uploading the training data to Lamini's storage failed (HTTP {exc.status_code}, "
            f"{exc.reason or 'no reason given'})",
            exc.status_code,
        ) from None
    except AzureError as exc:
        raise ServiceUnavailableError(
            f"uploading the training data to Lamini's storage failed ({type(exc).__name__})"
        ) from None


def start_job(api: LaminiApi, model_name: str, dataset_id: str, args: Mapping[str, Any]) -> str:
    """Start tuning ``model_name`` on an uploaded dataset; return the job id."""
    base = _field(
        api.call("GET", "/v1/get-upload-base-path"), "upload_base_path", "GET /v1/get-upload-base-path"
    )
    existing = api.call("POST", "/v1/existing-data", {"dataset_id": dataset_id, "upload_base_path": base})
    body: dict[str, Any] = {"model_name": model_name, "dataset_id": dataset_id}
    location = existing.get("dataset_location") if isinstance(existing, dict) else None
    if location is not None:
        body["upload_file_path"] = location
    if args:
        body["finetune_args"] = dict(args)
    reply = api.call("POST", "/v1/train", body)
    job_id = _field(reply, "job_id", "POST /v1/train", kinds=(int, str))
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
) -> JobOutcome:
    """Poll ``GET /v1/train/jobs/{job_id}`` every ``poll_interval`` seconds until the job ends.

    Each new status is logged (INFO), every poll at DEBUG; ``progress`` adds a
    tqdm line with the status and the elapsed time. Returns on any terminal
    status; the caller decides what a FAILED or CANCELLED job means.
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
                    f"Lamini answered GET /v1/train/jobs/{job_id} with {_shape(api, status)}; "
                    'expected an object with a "status" string',
                    status_code=200,
                )
            name = status["status"].upper()
            elapsed = time.monotonic() - start
            if name != last:
                logger.info("Lamini tuning job %s: %s (%.1fs)", job_id, name, elapsed)
                last = name
            logger.debug("Lamini tuning job %s poll %d: %s", job_id, polls, name)
            show(name)
            if name in COMPLETED_STATUSES | FAILED_STATUSES | CANCELLED_STATUSES:
                return JobOutcome(status, polls, elapsed)
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
) -> tuple[TrainResult, TuningJob]:
    """Upload, start, wait; return the result and the job. See the module docstring.

    A FAILED or CANCELLED job raises :class:`TuningJobError`; Ctrl-C while
    waiting cancels the job on the server and re-raises KeyboardInterrupt.
    """
    if not examples:
        raise TrainingError("no training examples; load data before calling train()")
    args = finetune_args(options)
    poll_interval = _option(options, "poll_interval", poll_interval)
    progress = bool(_option(options, "progress", progress))
    dataset_id = upload_examples(api, examples)
    job_id = start_job(api, model_name, dataset_id, args)
    try:
        outcome = wait_for_job(api, job_id, poll_interval, progress=progress)
    except KeyboardInterrupt as interrupt:
        if cancel_job(api, job_id):
            interrupt.add_note(f"llmrun cancelled Lamini tuning job {job_id}")
        raise
    except LLMRunError as error:
        _append(
            error,
            f" (while waiting for Lamini tuning job {job_id}, which may still be running: "
            f"{api.url}/tune/{job_id})",
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
    job = TuningJob(job_id, model_name, name, tuned, dataset_id, options.num_samples)
    result = TrainResult(
        model_name=tuned,
        status="completed",
        job_id=job_id,
        metrics={
            "num_examples": len(examples),
            "status_polls": outcome.polls,
            "wait_seconds": outcome.seconds,
        },
    )
    return result, job


# --------------------------------------------------------------------------- evaluation
def find_job(api: LaminiApi, model_name: str) -> TuningJob | None:
    """The latest job in this key's job list whose tuned model is ``model_name``, if any."""
    reply = api.call("GET", "/v1/train/jobs")
    jobs = reply.get("jobs", reply.get("data")) if isinstance(reply, dict) else reply
    if not isinstance(jobs, list):
        return None
    found = [j for j in jobs if isinstance(j, dict) and j.get("model_name") == model_name and "job_id" in j]
    if not found:
        return None
    latest = max(found, key=lambda j: (isinstance(j["job_id"], int), j["job_id"]))
    return TuningJob(
        str(latest["job_id"]), str(latest.get("base_model", "")), str(latest.get("status", "")), model_name
    )


def evaluate_job(api: LaminiApi, job: TuningJob, examples: Sequence[TrainingExample]) -> EvalResult:
    """Fetch ``GET /v1/train/jobs/{id}/eval`` and score it against the loaded pairs.

    Each eval row whose input is the prompt of a loaded example is scored:
    ``exact_match`` is the fraction of those rows where the tuned model's
    output matches the example's completion (see
    :func:`~llmrun.training.completions_match`), ``samples`` the first
    ``num_samples`` of them. Lamini gives no loss here, so ``loss`` and
    ``perplexity`` are None unless the reply has a numeric ``eval_loss``/``loss``.
    ``extra`` holds the job, the base model's exact match on the same rows and
    the raw rows.
    """
    path = f"/v1/train/jobs/{job.job_id}/eval"
    reply = api.call("GET", path)
    rows = reply.get("eval_results") if isinstance(reply, dict) else None
    if not isinstance(rows, list):
        raise BackendError(
            f'Lamini answered GET {path} with {_shape(api, reply)}; expected {{"eval_results": [...]}}',
            status_code=200,
        )
    expected = {e.prompt: e.completion for e in examples}
    scored: list[tuple[str, str, str, str | None]] = []  # (prompt, expected, tuned output, base output)
    for row in rows:
        if not isinstance(row, dict) or not isinstance(row.get("input"), str) or row["input"] not in expected:
            continue
        tuned, base = _outputs(row.get("outputs"), job)
        if tuned is not None:
            scored.append((row["input"], expected[row["input"]], tuned, base))
    exact = _fraction(completions_match(want, got) for _, want, got, _ in scored)
    with_base = [(want, base) for _, want, _, base in scored if base is not None]
    loss = _number(reply, "eval_loss", "loss")
    return EvalResult(
        loss=loss,
        perplexity=math.exp(min(loss, 700.0)) if loss is not None else None,
        exact_match=exact,
        samples=tuple(EvalSample(p, want, got.strip()) for p, want, got, _ in scored[: job.num_samples]),
        num_examples=len(scored),
        extra={
            "job_id": job.job_id,
            "model_name": job.model_name,
            "base_model": job.base_model,
            "eval_rows": len(rows),
            "unmatched_rows": len(rows) - len(scored),
            "base_exact_match": _fraction(completions_match(want, base) for want, base in with_base),
            "eval_results": rows,
        },
    )


def _outputs(outputs: Any, job: TuningJob) -> tuple[str | None, str | None]:
    """(tuned model's output, base model's output) of one eval row."""
    if not isinstance(outputs, list):
        return None, None
    texts = {
        o.get("model_name"): _as_text(o.get("output"))
        for o in outputs
        if isinstance(o, dict) and "output" in o
    }
    tuned = texts.get(job.model_name)
    if tuned is None:  # name not given: the first output not from the base model
        tuned = next((t for m, t in texts.items() if m != job.base_model), None)
    return tuned, texts.get(job.base_model)


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _fraction(hits: Iterator[bool] | Any) -> float | None:
    values = list(hits)
    return sum(values) / len(values) if values else None


def _number(reply: Any, *keys: str) -> float | None:
    for key in keys:
        value = reply.get(key) if isinstance(reply, dict) else None
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    return None


# --------------------------------------------------------------------------- helpers
def _field(reply: Any, key: str, what: str, kinds: tuple[type, ...] = (str,)) -> str:
    """``reply[key]`` as text; a missing or odd value is a BackendError naming the request."""
    value = reply.get(key) if isinstance(reply, dict) else None
    if not isinstance(value, kinds) or isinstance(value, bool) or value == "":
        got = f"an object with keys {sorted(reply)[:8]}" if isinstance(reply, dict) else type(reply).__name__
        raise BackendError(f'Lamini answered {what} without a usable "{key}" (got {got})', status_code=200)
    return str(value)


def _message(api: LaminiApi, status: Mapping[str, Any]) -> str | None:
    for key in _MESSAGE_KEYS:
        value = status.get(key)
        if isinstance(value, str) and value.strip():
            return api.redact(value.strip())
        if isinstance(value, dict | list) and value:
            return api.redact(json.dumps(value)[:500])
    return None


def _shape(api: LaminiApi, value: Any) -> str:
    return f"{type(value).__name__} {api.redact(json.dumps(value, default=str)[:120])}"


def _option(options: TrainOptions, name: str, fallback: Any) -> Any:
    """A TrainOptions field that may not exist yet (``poll_interval``, ``progress``); None means unset."""
    value = getattr(options, name, None)
    return fallback if value is None else value


def _append(error: BaseException, note: str) -> None:
    error.args = ((str(error.args[0]) if error.args else "") + note, *error.args[1:])
