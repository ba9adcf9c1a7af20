"""The cassette file format: one recording per JSON line, read strictly, written in a stable order.

A line holds the request (``backend``, ``model``, ``prompt``, ``output_schema``,
``settings``) and what was answered (``text``, ``finish_reason``, ``usage``, and
for streams ``chunks``); ``n`` numbers the recordings of a request made more than
once (absent for the first).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from llmrun.errors import CassetteError
from llmrun.runner import Completion, FinishReason, Usage

__all__ = ["KEY_FIELDS", "Recording", "canonical", "collapsed", "format_line", "parse_line"]

#: Fields of a line that are the request; the others are the recorded answer.
KEY_FIELDS = ("backend", "model", "prompt", "output_schema", "settings")


@dataclass(frozen=True)
class Recording:
    """One recorded answer."""

    text: str
    finish_reason: FinishReason
    usage: Usage
    chunks: tuple[str, ...] | None = None

    def same_answer(self, other: Recording) -> bool:
        return (self.text, self.finish_reason, self.usage) == (other.text, other.finish_reason, other.usage)

    def completion(self) -> Completion:
        return Completion(self.text, self.finish_reason, self.usage)


def canonical(key: Mapping[str, Any]) -> str:
    return json.dumps(key, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def collapsed(tape: list[Recording]) -> list[Recording]:
    """Drop trailing repeats (replay repeats the last recording) and keep chunks from any of them."""
    out = list(tape)
    while len(out) > 1 and out[-1].same_answer(out[-2]):
        last, prev = out.pop(), out.pop()
        out.append(prev if prev.chunks is not None else dataclasses.replace(prev, chunks=last.chunks))
    return out


def parse_line(raw: str, where: str) -> tuple[dict[str, Any], int, Recording]:
    try:
        line = json.loads(raw)
    except ValueError as exc:
        raise CassetteError(
            f"{where}: not valid JSON ({exc}); fix the line or re-record the cassette"
        ) from None
    if not isinstance(line, dict):
        raise CassetteError(f"{where}: a recording must be a JSON object, got {type(line).__name__}")
    missing = [f for f in (*KEY_FIELDS, "text", "finish_reason") if f not in line]
    if missing:
        raise CassetteError(f"{where}: the recording lacks {', '.join(missing)}; re-record the cassette")
    checks = {
        "backend": isinstance(line["backend"], str),
        "model": isinstance(line["model"], str),
        "prompt": isinstance(line["prompt"], str),
        "output_schema": line["output_schema"] is None or isinstance(line["output_schema"], dict),
        "settings": isinstance(line["settings"], dict),
        "text": isinstance(line["text"], str),
        "finish_reason": line["finish_reason"] in ("stop", "length"),
        "n": isinstance(line.get("n", 0), int)
        and not isinstance(line.get("n", 0), bool)
        and line.get("n", 0) >= 0,
    }
    bad = [name for name, ok in checks.items() if not ok]
    usage_raw = line.get("usage") or {}
    usage_ok = isinstance(usage_raw, dict) and all(
        v is None or (isinstance(v, int) and not isinstance(v, bool)) for v in usage_raw.values()
    )
    chunks = line.get("chunks")
    chunks_ok = chunks is None or (
        isinstance(chunks, list)
        and all(isinstance(c, str) for c in chunks)
        and "".join(chunks) == line["text"]
    )
    bad += [] if usage_ok else ["usage"]
    bad += [] if chunks_ok else ["chunks (must be strings joining to text)"]
    if bad:
        raise CassetteError(f"{where}: invalid {', '.join(bad)}; re-record the cassette")
    usage = Usage(usage_raw.get("prompt_tokens"), usage_raw.get("completion_tokens"))
    recording = Recording(line["text"], line["finish_reason"], usage, tuple(chunks) if chunks else None)
    return {f: line[f] for f in KEY_FIELDS}, int(line.get("n", 0)), recording


def format_line(key: Mapping[str, Any], recording: Recording, n: int) -> str:
    """One line of the file: the request's fields and the recording, keys sorted (no newline)."""
    line = dict(key)
    line.update(text=recording.text, finish_reason=recording.finish_reason)
    line["usage"] = dataclasses.asdict(recording.usage)
    if recording.chunks is not None:
        line["chunks"] = list(recording.chunks)
    if n:
        line["n"] = n
    return json.dumps(line, sort_keys=True, ensure_ascii=False)
