"""Lamini's request checks, fake reply values and tuning-job records (no HTTP, no server state).

The pieces :class:`~llmrun.testing.lamini_wire.FakeLaminiAPI` answers with: the error a
rejected request becomes (:class:`WireError`), checks of ``prompt`` / ``output_type`` /
training pairs as Lamini makes them, deterministic fake values (functions of the prompt
and field name), one completion's reply, and :class:`FakeJob`, a tuning job whose status
moves one step per poll. The wire format itself is described in
:mod:`~llmrun.testing.lamini_wire`, which re-exports every name here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

#: The field type names Lamini's ``output_type`` accepts.
LAMINI_TYPE_NAMES: tuple[str, ...] = ("str", "int", "float", "bool")
#: Job statuses after which a job no longer changes.
TERMINAL_STATUSES: frozenset[str] = frozenset(
    {"COMPLETED", "PARTIALLY COMPLETED", "FAILED", "CANCELLED", "CANCELED"}
)
#: The status progression of a job when nothing else is configured.
DEFAULT_JOB_PLAN: tuple[str, ...] = ("SCHEDULED", "RUNNING", "COMPLETED")
#: The ``message`` a FAILED job's status carries unless the server is told otherwise.
DEFAULT_FAILURE_MESSAGE = "training failed: the fake job's plan said FAILED"

_WORDS = (
    "alpha", "bravo", "cedar", "delta", "ember", "fjord", "grove", "harbor",
    "iris", "juniper", "kelp", "lumen", "maple", "nectar", "onyx", "pebble",
)  # fmt: skip

#: A scripted reply: a value, or f(prompt, output_type or None), which may return None for "fake it".
Reply = Any
Responder = Callable[[str, "dict[str, str] | None"], Any]


class WireError(Exception):
    """A request the fake rejects; becomes ``{"detail": detail}`` with ``status``."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def _digest(*parts: str) -> bytes:
    return hashlib.sha256("\x00".join(parts).encode("utf-8")).digest()


def fake_text(prompt: str, max_new_tokens: int | None = None) -> str:
    """Deterministic filler text for ``prompt``: at most ``max_new_tokens`` words (default 8)."""
    n_words = min(8, max_new_tokens) if max_new_tokens else 8
    d = _digest("text", prompt)
    return " " + " ".join(_WORDS[d[i] % len(_WORDS)] for i in range(max(1, n_words)))


def fake_value(type_name: str, prompt: str, field_name: str) -> Any:
    """A deterministic value of Lamini type ``type_name`` for one field.

    ``str``: one word of at most 7 letters; ``int``: 0..99; ``float``: 0.0..1.0 in
    steps of 0.01; ``bool``: from the hash. Small, so they fit the usual bounds.
    """
    d = _digest(type_name, prompt, field_name)
    if type_name == "str":
        return _WORDS[d[0] % len(_WORDS)]
    if type_name == "int":
        return int.from_bytes(d[:4], "big") % 100
    if type_name == "float":
        return (int.from_bytes(d[:4], "big") % 101) / 100
    if type_name == "bool":
        return bool(d[0] & 1)
    raise WireError(400, f"unknown output type {type_name!r}; valid types are {', '.join(LAMINI_TYPE_NAMES)}")


def fake_object(output_type: dict[str, str], prompt: str) -> dict[str, Any]:
    """A schema-valid reply for ``output_type``, field order kept."""
    return {name: fake_value(t, prompt, name) for name, t in output_type.items()}


def parse_output_type(raw: Any) -> dict[str, str] | None:
    """Check a request's ``output_type`` like Lamini does; ``None`` means untyped."""
    if raw is None:
        return None
    if not isinstance(raw, dict) or not raw:
        raise WireError(400, 'output_type must be a non-empty object like {"answer": "str"}')
    for name, t in raw.items():
        if t not in LAMINI_TYPE_NAMES:
            raise WireError(
                400,
                f"output_type field {name!r} has unsupported type {t!r}; "
                f"valid types are {', '.join(LAMINI_TYPE_NAMES)}",
            )
    return dict(raw)


def parse_prompts(body: dict[str, Any], max_batch: int | None) -> tuple[list[str], bool]:
    """The prompts of a completions request, and whether it was a batch (list)."""
    if not isinstance(body.get("model_name"), str) or not body["model_name"]:
        raise WireError(422, "model_name: field required (a non-empty string)")
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return [prompt], False
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        if max_batch is not None and len(prompt) > max_batch:
            raise WireError(400, f"batch of {len(prompt)} prompts is over the limit of {max_batch}")
        return list(prompt), True
    raise WireError(422, "prompt: must be a string or a non-empty list of strings")


def tuned_model_name(job_id: int, base_model: str) -> str:
    """The 64-hex-digit model name a completed job gets (as Lamini names tuned models)."""
    return hashlib.sha256(f"{job_id}:{base_model}".encode()).hexdigest()


def dataset_id_for(data: Sequence[Any]) -> str:
    """A content hash, so uploading the same data twice gives the same id."""
    return hashlib.sha256(json.dumps(list(data), sort_keys=True).encode()).hexdigest()


def check_pairs(data: Any) -> list[dict[str, Any]]:
    """Validate uploaded training data: a non-empty list of ``{"input", "output"}`` objects."""
    if not isinstance(data, list) or not data:
        raise WireError(400, 'data must be a non-empty list of {"input": ..., "output": ...} objects')
    for i, item in enumerate(data):
        if not isinstance(item, dict) or "input" not in item or "output" not in item:
            raise WireError(400, f"data[{i}] must be an object with 'input' and 'output' keys")
    return list(data)


@dataclass
class FakeJob:
    """One tuning job. Each status poll moves it one step along ``plan``."""

    job_id: int
    base_model: str
    dataset_id: str
    data: list[dict[str, Any]]
    plan: tuple[str, ...]
    custom_model_name: str | None = None
    finetune_args: dict[str, Any] = field(default_factory=dict)
    step: int = 0
    cancelled: bool = False
    polls: int = 0
    failure_message: str = DEFAULT_FAILURE_MESSAGE

    @property
    def status(self) -> str:
        if self.cancelled:
            return "CANCELLED"
        return self.plan[min(self.step, len(self.plan) - 1)]

    @property
    def model_name(self) -> str | None:
        """Set once the job has completed, like Lamini's ``model_name``."""
        if self.status in ("COMPLETED", "PARTIALLY COMPLETED"):
            return tuned_model_name(self.job_id, self.base_model)
        return None

    def poll(self) -> dict[str, Any]:
        """Answer a status request, then advance one step."""
        self.polls += 1
        reply = self.describe()
        if not self.cancelled and self.step < len(self.plan) - 1:
            self.step += 1
        return reply

    def describe(self) -> dict[str, Any]:
        reply: dict[str, Any] = {
            "job_id": self.job_id,
            "status": self.status,
            "start_time": "2024-01-01T00:00:00.000000",
            "model_name": self.model_name,
            "custom_model_name": self.custom_model_name,
            "dataset_id": self.dataset_id,
            "is_public": False,
        }
        if self.status == "FAILED":
            reply["message"] = self.failure_message
        elif self.status in ("CANCELLED", "CANCELED"):
            reply["message"] = (
                "cancelled by request" if self.cancelled else "cancelled on the Lamini platform"
            )
        return reply

    def cancel(self) -> dict[str, Any]:
        if self.status in TERMINAL_STATUSES:
            raise WireError(400, f"job {self.job_id} is already {self.status} and cannot be cancelled")
        self.cancelled = True
        return {"message": f"cancelled {self.job_id}", "job_id": self.job_id, "status": "CANCELLED"}

    def eval_results(self, limit: int = 10) -> dict[str, Any]:
        """Tuned-model outputs (the training answers: it memorised them) next to base-model ones."""
        if self.model_name is None:
            raise WireError(400, f"job {self.job_id} has no eval results: its status is {self.status}")
        rows = []
        for pair in self.data[:limit]:
            prompt = str(pair["input"])
            rows.append(
                {
                    "input": prompt,
                    "outputs": [
                        {"model_name": self.model_name, "output": pair["output"]},
                        {"model_name": self.base_model, "output": fake_text(prompt)},
                    ],
                }
            )
        return {"job_id": self.job_id, "eval_results": rows}

    def answer(self, prompt: str) -> Any:
        """What the tuned model says to a training input, or ``None`` if it never saw it."""
        for pair in self.data:
            if pair["input"] == prompt:
                return pair["output"]
        return None


def complete_one(
    prompt: str,
    output_type: dict[str, str] | None,
    max_new_tokens: int | None,
    scripted: Reply | None,
) -> Any:
    """One completion: the scripted reply verbatim when there is one, else a fake.

    A callable reply that returns ``None`` falls back to the fake.

    Untyped replies are wrapped as ``{"output": text}``; typed ones are the object.
    Scripted values are *not* checked against ``output_type``, so tests can make
    the server answer with invalid data on purpose.
    """
    value = scripted(prompt, output_type) if callable(scripted) else scripted
    if value is not None:
        if output_type is None and not isinstance(value, dict):
            return {"output": value}
        return value
    if output_type is None:
        return {"output": fake_text(prompt, max_new_tokens)}
    return fake_object(output_type, prompt)
