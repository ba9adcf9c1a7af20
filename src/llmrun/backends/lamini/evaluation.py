"""Evaluating a Lamini tuning job: its eval rows (``GET /v1/train/jobs/{id}/eval``) against the pairs."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from typing import Any

from llmrun.backends.lamini.api import LaminiApi, job_list, reply_shape
from llmrun.backends.lamini.tuning import TuningJob
from llmrun.errors import BackendError
from llmrun.training import EvalResult, EvalSample, TrainingExample, completions_match

__all__ = ["evaluate_job", "find_job"]


def find_job(api: LaminiApi, model_name: str) -> TuningJob | None:
    """The latest job in this key's job list whose tuned model is ``model_name``, if any."""
    jobs = job_list(api.call("GET", "/v1/train/jobs"))
    found = [j for j in jobs if j.get("model_name") == model_name]
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
            f'Lamini answered GET {path} with {reply_shape(api, reply)}; expected {{"eval_results": [...]}}',
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
