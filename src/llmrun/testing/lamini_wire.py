"""Lamini's wire format, as the fake server speaks it (no HTTP here).

What the ``lamini`` 3.4 client sends and expects, in one place:

* every request carries ``Authorization: Bearer <key>`` and JSON bodies;
* errors are JSON ``{"detail": "..."}`` with the HTTP status saying which kind
  (400 bad request, 401 bad key, 422 bad schema, 429 rate limit, 503 unavailable);
* ``POST /v1/completions`` takes ``model_name``, ``prompt`` (a string, or a list
  for a batch), optional ``output_type`` (``{"field": "str"|"int"|"float"|"bool"}``),
  ``max_tokens`` and ``max_new_tokens``. It answers ``{"output": text}`` without
  ``output_type``, the typed object itself with it, and a list of those for a
  list prompt;
* tuning: ``GET /v1/get-upload-base-path`` -> ``{"upload_base_path"}``;
  ``POST /v1/local-data`` (``upload_base_path``, ``data``: ``[{"input", "output"}]``)
  -> ``{"dataset_id", "dataset_location"}``; ``POST /v1/existing-data``
  (``dataset_id``, ``upload_base_path``) -> ``{"dataset_location"}``;
  ``POST /v1/train`` (``model_name``, ``dataset_id`` or inline ``data``, optional
  ``finetune_args``, ``custom_model_name``, ...) -> ``{"job_id", "status"}``;
  ``GET /v1/train/jobs/{id}`` -> ``{"job_id", "status", "model_name", ...}``;
  ``GET /v1/train/jobs/{id}/eval`` -> ``{"job_id", "eval_results": [{"input",
  "outputs": [{"model_name", "output"}]}]}``; ``POST /v1/train/jobs/{id}/cancel``.
  A FAILED job's status has a ``message``;
* when ``upload_base_path`` is ``"azure"`` the client instead asks ``POST /v1/data``
  for a ``dataset_id`` and a signed blob URL (``dataset_location``), puts the pairs
  there as JSON lines (Azure ``Put Blob``, after a ``HEAD`` to see if it exists) and
  reports the count with ``POST /v1/data/num-datapoints``. The fake serves such blob
  URLs itself (``upload_mode="azure"``).

Fake values are deterministic functions of the prompt and field name; they, the request
checks and the job records live in :mod:`~llmrun.testing.lamini_payloads` (re-exported here).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Callable, Mapping
from typing import Any

from llmrun.testing.lamini_extras import FakeExtras
from llmrun.testing.lamini_payloads import (
    DEFAULT_FAILURE_MESSAGE,
    DEFAULT_JOB_PLAN,
    LAMINI_TYPE_NAMES,
    TERMINAL_STATUSES,
    FakeJob,
    Reply,
    Responder,
    WireError,
    check_pairs,
    complete_one,
    dataset_id_for,
    fake_object,
    fake_text,
    fake_value,
    parse_output_type,
    parse_prompts,
    tuned_model_name,
)

__all__ = [
    "BLOB_PREFIX",
    "BLOB_SIGNATURE",
    "DEFAULT_FAILURE_MESSAGE",
    "DEFAULT_JOB_PLAN",
    "LAMINI_TYPE_NAMES",
    "TERMINAL_STATUSES",
    "UPLOAD_BASE_PATH",
    "FakeJob",
    "FakeLaminiAPI",
    "Reply",
    "Responder",
    "WireError",
    "check_pairs",
    "complete_one",
    "dataset_id_for",
    "fake_object",
    "fake_text",
    "fake_value",
    "parse_output_type",
    "parse_prompts",
    "tuned_model_name",
]

#: Where the fake says uploads go (never "azure": that would send the client to blob storage).
UPLOAD_BASE_PATH = "fake-lamini://datasets"
#: Path prefix of the fake's blob store, which stands in for the Azure storage Lamini uploads to
#: when ``upload_base_path`` is ``"azure"``: ``PUT``/``HEAD`` ``{BLOB_PREFIX}/<dataset_id>.jsonl?sig=...``.
BLOB_PREFIX = "/fakeaccount/datasets"
#: The signature the fake puts in its signed blob URLs (and requires on blob requests).
BLOB_SIGNATURE = "fake-signature-0123"


def _blob_error(status: int, code: str, message: str) -> tuple[int, dict[str, str], bytes]:
    body = f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{code}</Code><Message>{message}</Message>'
    body += "</Error>"
    return status, {"x-ms-error-code": code, "Content-Type": "application/xml"}, body.encode()


_JOB_PATH = re.compile(r"^/v1/train/jobs/(\d+)(/eval|/cancel)?$")


class FakeLaminiAPI:
    """Lamini's API behaviour without HTTP: scripts, datasets, jobs and one :meth:`handle`.

    Thread-safe. ``job_plan`` applies to jobs created after it is set.
    """

    def __init__(
        self,
        job_plan: tuple[str, ...] = DEFAULT_JOB_PLAN,
        max_batch: int | None = None,
        models: set[str] | None = None,
    ) -> None:
        if not job_plan:
            raise ValueError("job_plan must name at least one status, e.g. ('RUNNING', 'COMPLETED')")
        self.job_plan = tuple(job_plan)
        #: The ``message`` of FAILED jobs created from now on.
        self.failure_message = DEFAULT_FAILURE_MESSAGE
        self.max_batch = max_batch
        self.models = models
        self.responder: Responder | None = None
        self.scripts: dict[str, Reply] = {}
        self.datasets: dict[str, list[dict[str, Any]]] = {}
        self.jobs: dict[int, FakeJob] = {}
        #: ``"local"``: data comes in ``POST /v1/local-data``; ``"azure"``: through the blob store.
        self.upload_mode: str = "local"
        #: Base URL of the blob store (the server sets it to ``<its url>{BLOB_PREFIX}``).
        self.blob_base_url = "http://127.0.0.1" + BLOB_PREFIX
        #: Datasets announced by ``POST /v1/data`` whose blob has not arrived yet.
        self.pending_blobs: set[str] = set()
        self._blocks: dict[str, dict[str, bytes]] = {}
        self._next_job = 1
        self._next_dataset = 1
        #: Batch completions and embeddings (:mod:`llmrun.testing.lamini_extras`).
        self.extras = FakeExtras()
        #: Guards the state above; hold it to read or change it from another thread.
        self.lock = threading.RLock()

    def reset(self) -> None:
        """Forget scripts, datasets and jobs; back to local uploads and the default failure message."""
        with self.lock:
            self.scripts.clear()
            self.datasets.clear()
            self.jobs.clear()
            self.pending_blobs.clear()
            self._blocks.clear()
            self._next_job = self._next_dataset = 1
            self.extras.reset()
            self.upload_mode = "local"
            self.failure_message = DEFAULT_FAILURE_MESSAGE

    def handle(self, method: str, path: str, body: dict[str, Any]) -> Any:
        """The JSON reply to one request, or :class:`WireError`."""
        routes: dict[tuple[str, str], Callable[[dict[str, Any]], Any]] = {
            ("POST", "/v1/completions"): self._completions,
            ("GET", "/v1/get-upload-base-path"): self._upload_base_path,
            ("POST", "/v1/local-data"): self._local_data,
            ("POST", "/v1/data"): self._blob_dataset,
            ("POST", "/v1/data/num-datapoints"): self._num_datapoints,
            ("POST", "/v1/existing-data"): self._existing_data,
            ("POST", "/v1/train"): self._train,
            ("GET", "/v1/train/jobs"): self._list_jobs,
            ("POST", "/v1/train/jobs/cancel"): self._cancel_all,
            ("GET", "/v1/version"): lambda _: {"server_version": "fake", "features": []},
        }
        handler = routes.get((method, path))
        if handler is not None:
            with self.lock:
                return handler(body)
        with self.lock:
            handled, reply = self.extras.handle(method, path, body, self._completions)
        if handled:
            return reply
        m = _JOB_PATH.match(path)
        if m is not None:
            job_id, action = int(m.group(1)), m.group(2) or ""
            if method == ("POST" if action == "/cancel" else "GET"):
                with self.lock:
                    job = self.jobs.get(job_id)
                    if job is None:
                        raise WireError(404, f"job {job_id} not found")
                    if action == "/eval":
                        return job.eval_results()
                    return job.cancel() if action == "/cancel" else job.poll()
        if m is not None or any(p == path for _, p in routes):
            raise WireError(405, "Method Not Allowed")
        raise WireError(404, "Not Found")

    # ----------------------------------------------------------------- completions
    def _completions(self, body: dict[str, Any]) -> Any:
        prompts, batched = parse_prompts(body, self.max_batch)
        output_type = parse_output_type(body.get("output_type"))
        model = body["model_name"]
        if self.models is not None and model not in self.models and self._tuned(model) is None:
            raise WireError(594, f"model {model!r} not found")
        max_new = body.get("max_new_tokens")
        budget = max_new if isinstance(max_new, int) and not isinstance(max_new, bool) else None
        out = [complete_one(p, output_type, budget, self._reply_for(model, p, output_type)) for p in prompts]
        return out if batched else out[0]

    def _reply_for(self, model: str, prompt: str, output_type: dict[str, str] | None) -> Reply | None:
        scripted = self.scripts.get(prompt)
        if scripted is None:
            scripted = self.responder
        return scripted if scripted is not None else self._tuned_answer(model, prompt, output_type)

    def _tuned(self, model: str) -> FakeJob | None:
        return next((j for j in self.jobs.values() if j.model_name == model), None)

    def _tuned_answer(self, model: str, prompt: str, output_type: dict[str, str] | None) -> Any:
        """A tuned model repeats its training answers (typed ones if they parse as the object)."""
        job = self._tuned(model)
        answer = None if job is None else job.answer(prompt)
        if answer is None or output_type is None:
            return answer
        try:
            obj = json.loads(answer) if isinstance(answer, str) else answer
        except ValueError:
            return None
        return obj if isinstance(obj, dict) and set(obj) == set(output_type) else None

    # ----------------------------------------------------------------- tuning
    def _upload_base_path(self, _: dict[str, Any]) -> dict[str, Any]:
        return {"upload_base_path": "azure" if self.upload_mode == "azure" else UPLOAD_BASE_PATH}

    def _blob_dataset(self, body: dict[str, Any]) -> dict[str, Any]:
        if self.upload_mode != "azure":
            raise WireError(400, "this server takes uploads through POST /v1/local-data")
        dataset_id = hashlib.sha256(f"blob-dataset-{self._next_dataset}".encode()).hexdigest()
        self._next_dataset += 1
        self.pending_blobs.add(dataset_id)
        location = f"{self.blob_base_url}/{dataset_id}.jsonl?sv=2023-11-03&sr=b&sp=cw&sig={BLOB_SIGNATURE}"
        return {"dataset_id": dataset_id, "dataset_location": location}

    def _num_datapoints(self, body: dict[str, Any]) -> dict[str, Any]:
        dataset_id, count = body.get("dataset_id"), body.get("num_datapoints")
        data = self.datasets.get(dataset_id) if isinstance(dataset_id, str) else None
        if data is None:
            raise WireError(400, f"dataset {dataset_id!r} has no uploaded data")
        if count != len(data):
            raise WireError(400, f"num_datapoints={count!r} but the uploaded blob holds {len(data)} lines")
        return {"dataset_id": dataset_id, "num_datapoints": count}

    def blob(
        self, method: str, path: str, query: Mapping[str, str], raw: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        """A blob-store request: ``(status, headers, body)``, shaped like Azure's answers.

        Serves what ``BlobClient`` sends: ``HEAD`` (exists?), ``PUT`` (Put Blob), and
        ``PUT ?comp=block&blockid=`` / ``PUT ?comp=blocklist`` (a blob uploaded in blocks).
        """
        dataset_id = path[len(BLOB_PREFIX) + 1 :].removesuffix(".jsonl")
        headers = {"ETag": '"0x8DC0000000000001"', "Last-Modified": "Mon, 01 Jan 2024 00:00:00 GMT"}
        if query.get("sig") != BLOB_SIGNATURE:
            return _blob_error(403, "AuthenticationFailed", "the blob URL's signature is missing or wrong")
        with self.lock:
            if method == "HEAD":
                if dataset_id not in self.datasets:
                    return _blob_error(404, "BlobNotFound", "The specified blob does not exist.")
                size = len(json.dumps(self.datasets[dataset_id]))
                return 200, {**headers, "x-ms-blob-type": "BlockBlob", "Content-Length": str(size)}, b""
            if method != "PUT":
                return _blob_error(405, "UnsupportedHttpVerb", f"{method} is not supported on blobs here")
            if dataset_id not in self.pending_blobs and dataset_id not in self.datasets:
                return _blob_error(404, "ContainerNotFound", "no dataset was created for this blob")
            staged = self._blocks.setdefault(dataset_id, {})
            comp = query.get("comp")
            if comp == "block":
                staged[query.get("blockid", "")] = raw
                return 201, {"Content-Length": "0"}, b""
            if comp == "blocklist":
                ids = re.findall(
                    r"<(?:Latest|Uncommitted|Committed)>([^<]*)</", raw.decode("utf-8", "replace")
                )
                if any(i not in staged for i in ids):
                    return _blob_error(400, "InvalidBlockList", "the block list names a block never staged")
                raw = b"".join(staged[i] for i in ids)
            elif comp is not None:
                return _blob_error(400, "InvalidQueryParameterValue", f"comp={comp} is not supported here")
            try:
                rows = [json.loads(line) for line in raw.decode("utf-8").splitlines() if line.strip()]
                self.datasets[dataset_id] = check_pairs(rows)
            except (ValueError, WireError) as exc:
                return _blob_error(
                    400, "InvalidInput", f"the blob is not JSON lines of input/output pairs: {exc}"
                )
            self.pending_blobs.discard(dataset_id)
            self._blocks.pop(dataset_id, None)
        return 201, {**headers, "Content-Length": "0"}, b""

    def _local_data(self, body: dict[str, Any]) -> dict[str, Any]:
        data = check_pairs(body.get("data"))
        dataset_id = dataset_id_for(data)
        self.datasets[dataset_id] = data
        return {"dataset_id": dataset_id, "dataset_location": f"{UPLOAD_BASE_PATH}/{dataset_id}"}

    def _existing_data(self, body: dict[str, Any]) -> dict[str, Any]:
        dataset_id = body.get("dataset_id")
        if not isinstance(dataset_id, str) or dataset_id not in self.datasets:
            raise WireError(400, f"dataset {dataset_id!r} not found; upload it first")
        return {"dataset_id": dataset_id, "dataset_location": f"{UPLOAD_BASE_PATH}/{dataset_id}"}

    def _train(self, body: dict[str, Any]) -> dict[str, Any]:
        model = body.get("model_name")
        if not isinstance(model, str) or not model:
            raise WireError(422, "model_name: field required (a non-empty string)")
        dataset_id = body.get("dataset_id")
        if "data" in body:
            dataset_id = self._local_data({"data": body["data"]})["dataset_id"]
        data = self.datasets.get(dataset_id) if isinstance(dataset_id, str) else None
        if data is None:
            raise WireError(400, f"dataset {dataset_id!r} not found; upload it first")
        job = FakeJob(
            job_id=self._next_job,
            base_model=model,
            dataset_id=str(dataset_id),
            data=data,
            plan=self.job_plan,
            custom_model_name=body.get("custom_model_name"),
            finetune_args=dict(body.get("finetune_args") or {}),
            failure_message=self.failure_message,
        )
        self.jobs[job.job_id] = job
        self._next_job += 1
        return {"job_id": job.job_id, "status": job.status, "dataset_id": job.dataset_id}

    def _list_jobs(self, _: dict[str, Any]) -> list[dict[str, Any]]:
        return [j.describe() for j in self.jobs.values()]

    def _cancel_all(self, _: dict[str, Any]) -> dict[str, Any]:
        live = [j for j in self.jobs.values() if j.status not in TERMINAL_STATUSES]
        for j in live:
            j.cancel()
        return {"message": f"cancelled {len(live)} job(s)", "job_ids": [j.job_id for j in live]}
