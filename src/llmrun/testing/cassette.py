"""Cassettes: record a test's completions once, replay them with no network and no model.

::

    with cassette("tests/cassettes/qa.jsonl", mode="auto"):
        runner = llmrun.load("my-model", backend="lamini")   # or BasicModelRunner / LLMEngine
        assert runner("Q: 2+2?") == "4"

A cassette hooks the backend contract, not a backend: every runner that
``llmrun.load`` (and so ``BasicModelRunner`` and ``LLMEngine``) builds inside the
block is a :class:`CassetteRunner` whose ``complete`` / ``acomplete`` /
``stream_completion`` answer each :class:`~llmrun.runner.CompletionRequest` from
the file, or from the real runner while recording. A runner you built yourself
joins with ``tape.wrap(runner)``.

Modes:

- ``"replay"``: answer from the file only; the real runner is never built (no
  key, no network, no model). A request that was not recorded raises
  :class:`~llmrun.errors.CassetteMissError` naming it, the file, and how to re-record.
- ``"record"``: call the real runner for everything and write the file anew.
- ``"auto"``: replay what was recorded; build the real runner only for a miss,
  and add its answer to the file.

Each prompt of a request is one recording, keyed by backend, model, rendered
prompt, output JSON Schema and generation settings (those that differ from
the defaults, and ``max_new_tokens`` as the effective budget); a batch recorded
once can be replayed one prompt at a time and back. The same request made
again gets the next recording (``"n"``), and the last one once they run out.
Streams keep their chunks.

The file is JSON lines: one recording per line, keys sorted, lines sorted, so
a re-recording that changes nothing changes no byte and a diff shows what did.
Runner options (``api_key``, ``api_url``, ...) are never written, the contract
carries no HTTP headers, and any text that contains the value of a key-like
option (``*key*``, ``*token*``, ``*secret*``, ``*password*``, ``*auth*``) or of
such an environment variable is written as ``<redacted>``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import threading
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Literal, cast

from llmrun.errors import BatchError, CassetteError, CassetteMissError, InvalidInputError, renumbered
from llmrun.generation import GenerationConfig
from llmrun.runner import Capabilities, Completion, CompletionRequest, ModelRunner, Usage
from llmrun.testing.cassette_file import (
    KEY_FIELDS,
    Recording,
    canonical,
    collapsed,
    format_line,
    parse_line,
)
from llmrun.testing.override import RunnerSpec, override

__all__ = ["Cassette", "CassetteMode", "CassetteRunner", "cassette"]

CassetteMode = Literal["record", "replay", "auto"]
_MODES: tuple[CassetteMode, ...] = ("record", "replay", "auto")
_SECRET_NAME = re.compile(r"key|token|secret|password|auth", re.IGNORECASE)
_REDACTED = "<redacted>"
#: Secrets shorter than this are not searched for (they would redact ordinary words).
_MIN_SECRET = 6
#: Settings that do not change what a backend answers, so they are not part of the key.
_UNKEYED_SETTINGS = frozenset({"retries"})


class Cassette:
    """A file of recorded completions and the runners that read and write it.

    Use it as a context manager (see :func:`cassette`): inside the block, runners
    built through the registry are cassette runners; the file is written when the
    block ends (in ``"record"`` and ``"auto"`` modes, only if something was recorded).
    """

    def __init__(self, path: str | os.PathLike[str], mode: CassetteMode = "replay") -> None:
        if not isinstance(mode, str) or mode not in _MODES:
            raise InvalidInputError(f"cassette mode={mode!r} is invalid: use 'record', 'replay' or 'auto'")
        if not isinstance(path, str | os.PathLike) or not str(path):
            raise InvalidInputError(f"cassette path must be a file path, got {path!r}")
        self.path = Path(path)
        self.mode: CassetteMode = mode
        self._lock = threading.Lock()
        self._keys: dict[str, dict[str, Any]] = {}
        self._tapes: dict[str, list[Recording]] = {}
        self._calls: Counter[str] = Counter()
        self._secrets: set[str] = set(_secret_env_values())
        self._dirty = False
        self._override: override | None = None
        if mode != "record" and self.path.exists():
            self._load()

    def __repr__(self) -> str:
        return f"Cassette({str(self.path)!r}, mode={self.mode!r}, recordings={len(self)})"

    def __len__(self) -> int:
        return sum(len(tape) for tape in self._tapes.values())

    # ------------------------------------------------------------------ activation
    def __enter__(self) -> Cassette:
        if self._override is not None:
            raise InvalidInputError(f"{self!r} is already active")
        self._override = override(self._runner_for)
        self._override.__enter__()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._override is not None:
            self._override.__exit__(exc_type, exc, tb)
            self._override = None
        self.save()

    def wrap(self, runner: ModelRunner) -> CassetteRunner:
        """A runner you built yourself, recorded or replayed through this cassette.

        What it records is written when the cassette's ``with`` block ends (or on :meth:`save`).
        """
        if not isinstance(runner, ModelRunner):
            raise InvalidInputError(f"wrap() takes a llmrun ModelRunner, got {type(runner).__name__}")
        return CassetteRunner(self, runner.backend_name, runner.model_name, inner=runner)

    def _runner_for(self, spec: RunnerSpec) -> CassetteRunner:
        self.add_secrets(_secret_option_values(spec.options))
        generation = spec.options.get("generation")
        template = spec.options.get("template")
        if self.mode == "record":
            inner = spec.build()
            return CassetteRunner(self, spec.backend, inner.model_name, inner=inner)
        return CassetteRunner(
            self,
            spec.backend,
            spec.model,
            build=spec.build if self.mode == "auto" else None,
            generation=generation,
            template=template,
        )

    def add_secrets(self, values: set[str]) -> None:
        """Values that must never be written (options the cassette did not see, say)."""
        with self._lock:
            self._secrets |= {v for v in values if isinstance(v, str) and len(v) >= _MIN_SECRET}

    # ------------------------------------------------------------------ look-up and record
    def key_of(self, runner: CassetteRunner, prompt: str, request: CompletionRequest) -> dict[str, Any]:
        """The fields that identify one prompt of ``request`` in the file."""
        defaults = GenerationConfig()
        settings = {  # only what differs from the defaults, so a new setting leaves old keys alone
            f.name: getattr(request.config, f.name)
            for f in dataclasses.fields(request.config)
            if f.name not in _UNKEYED_SETTINGS
            and getattr(request.config, f.name) != getattr(defaults, f.name)
        }
        settings["max_new_tokens"] = request.max_new_tokens  # the effective budget, always
        key = {
            "backend": runner.backend_name,
            "model": runner.model_name,
            "prompt": prompt,
            "output_schema": request.output.json_schema if request.output is not None else None,
            "settings": settings,
        }
        return cast(dict[str, Any], self._redact(json.loads(json.dumps(key))))

    def play(self, key: dict[str, Any]) -> Recording | None:
        """The next recording for ``key``, or None when there is none."""
        ref = canonical(key)
        with self._lock:
            tape = self._tapes.get(ref)
            if not tape:
                return None
            n = self._calls[ref]
            self._calls[ref] += 1
            return tape[min(n, len(tape) - 1)]

    def record(self, key: dict[str, Any], recording: Recording) -> None:
        """Add what the real runner answered for ``key``."""
        ref = canonical(key)
        recording = Recording(
            self._redact(recording.text),
            recording.finish_reason,
            recording.usage,
            tuple(self._redact(c) for c in recording.chunks) if recording.chunks is not None else None,
        )
        with self._lock:
            tape = self._tapes.setdefault(ref, [])
            self._keys[ref] = key
            if self.mode == "auto":
                self._calls[ref] += 1  # this call used the recording it made
            tape.append(recording)
            self._dirty = True

    def miss(self, key: dict[str, Any]) -> CassetteMissError:
        """The error for a request that was not recorded, naming it and what differs from the nearest."""
        schema = key["output_schema"]
        output = "JSON Schema " + _short(json.dumps(schema, sort_keys=True), 80) if schema else "text"
        request = (
            f"backend {key['backend']!r}, model {key['model']!r}, output {output}, "
            f"settings {json.dumps(key['settings'], sort_keys=True)}, prompt {_short(key['prompt'], 200)!r}"
        )
        where = f"cassette {self.path}" + ("" if self.path.exists() else " (the file does not exist)")
        nearest = self._nearest(key)
        hint = f"; the nearest recording differs in {nearest}" if nearest else ""
        return CassetteMissError(
            f"no recording in {where} for the request {request}{hint}. Re-record it: "
            "cassette(..., mode='record') (or mode='auto' to record only what is missing); "
            "under pytest, run with --llmrun-cassette-mode=record",
            path=self.path,
            key=key,
        )

    def _nearest(self, key: dict[str, Any]) -> str:
        best: list[str] | None = None
        for other in self._keys.values():
            diff = [f for f in KEY_FIELDS if f != "settings" and other[f] != key[f]]
            diff += [
                f"settings.{name}"
                for name in sorted(set(other["settings"]) | set(key["settings"]))
                if other["settings"].get(name) != key["settings"].get(name)
            ]
            if best is None or len(diff) < len(best):
                best = diff
        return ", ".join(best) if best else ""

    def _redact(self, value: Any) -> Any:
        if isinstance(value, str):
            for secret in self._secrets:
                value = value.replace(secret, _REDACTED)
            return value
        if isinstance(value, dict):
            return {k: self._redact(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._redact(v) for v in value]
        return value

    # ------------------------------------------------------------------ the file
    def save(self) -> None:
        """Write the file (sorted JSON lines) if anything was recorded since it was read."""
        with self._lock:
            if not self._dirty:
                return
            lines = []
            for ref in sorted(self._tapes):
                for n, recording in enumerate(collapsed(self._tapes[ref])):
                    lines.append(format_line(self._redact(self._keys[ref]), recording, n))
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temp = self.path.with_name(self.path.name + ".tmp")
            body = "".join(line + "\n" for line in lines)
            temp.write_text(body, encoding="utf-8")
            os.replace(temp, self.path)
            self._dirty = False

    def _load(self) -> None:
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise CassetteError(f"cassette {self.path} cannot be read: {exc}") from None
        seen: set[tuple[str, int]] = set()
        for number, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            key, n, recording = parse_line(raw, f"{self.path}:{number}")
            ref = canonical(key)
            if (ref, n) in seen:
                raise CassetteError(f"{self.path}:{number}: a second recording n={n} of the same request")
            seen.add((ref, n))
            self._keys[ref] = key
            tape = self._tapes.setdefault(ref, [])
            tape.extend([recording] * (n + 1 - len(tape)))  # placeholders until the right n arrives
            tape[n] = recording
        for ref, tape in self._tapes.items():
            absent = [n for n in range(len(tape)) if (ref, n) not in seen]
            if absent:
                raise CassetteError(
                    f"{self.path}: the recordings of prompt {_short(self._keys[ref]['prompt'], 80)!r} "
                    f"lack n={absent[0]}; re-record the cassette"
                )


class CassetteRunner(ModelRunner):
    """A runner whose completions come from a :class:`Cassette`, or from the real runner while recording.

    ``backend_name`` and ``model_name`` are those of the runner it stands for.
    ``runner`` is that real runner (built on first use in ``"auto"`` mode; never in ``"replay"``).
    """

    __test__ = False
    backend_name: ClassVar[str] = "cassette"
    capabilities: ClassVar[Capabilities] = Capabilities(streams=True)

    def __init__(
        self,
        tape: Cassette,
        backend: str,
        model_name: str,
        *,
        inner: ModelRunner | None = None,
        build: Any = None,
        capabilities: Capabilities | None = None,
        generation: GenerationConfig | None = None,
        template: str | None = None,
    ) -> None:
        if inner is not None:
            generation, template = inner.generation, inner.template
        super().__init__(model_name, generation=generation, template=template)
        self.cassette = tape
        self.backend_name = backend  # type: ignore[misc]
        chosen = inner.capabilities if inner is not None else capabilities
        self.capabilities = chosen or Capabilities(streams=True)  # type: ignore[misc]
        self._inner = inner
        self._build = build
        self._build_lock = threading.Lock()

    def __repr__(self) -> str:
        name = f"backend={self.backend_name!r}, model_name={self.model_name!r}"
        return f"CassetteRunner({name}, {self.cassette!r})"

    @property
    def runner(self) -> ModelRunner:
        """The real runner (built now if needed); a replay-only cassette has none."""
        with self._build_lock:
            if self._inner is None:
                if self._build is None:
                    raise InvalidInputError(
                        f"{self!r} replays only and has no real runner; use mode='auto' or 'record'"
                    )
                try:
                    self._inner = self._build()
                except Exception as exc:
                    exc.add_note(
                        f"cassette {self.cassette.path} (mode {self.cassette.mode!r}) had no recording of "
                        f"a request, so it built the real {self.backend_name!r} runner to record one; "
                        "use mode='replay' to fail on the missing recording instead"
                    )
                    raise
                self.capabilities = self._inner.capabilities  # type: ignore[misc]
            return self._inner

    @property
    def _records(self) -> bool:
        return self._inner is not None or self._build is not None

    # ------------------------------------------------------------------ the contract
    def complete(self, request: CompletionRequest) -> list[Completion]:
        keys, found, missing = self._look_up(request)
        if missing:
            sub = dataclasses.replace(request, prompts=tuple(request.prompts[i] for i in missing))
            try:
                done = self.runner.complete(sub)
            except BatchError as exc:
                raise self._partly_failed(keys, found, missing, exc, len(request.prompts)) from None
            self._fill(keys, found, missing, done)
        return [found[i].completion() for i in range(len(request.prompts))]

    async def acomplete(self, request: CompletionRequest) -> list[Completion]:
        keys, found, missing = self._look_up(request)
        if missing:
            sub = dataclasses.replace(request, prompts=tuple(request.prompts[i] for i in missing))
            try:
                done = await self.runner.acomplete(sub)
            except BatchError as exc:
                raise self._partly_failed(keys, found, missing, exc, len(request.prompts)) from None
            self._fill(keys, found, missing, done)
        return [found[i].completion() for i in range(len(request.prompts))]

    def stream_completion(self, request: CompletionRequest) -> Iterator[str]:
        keys, found, missing = self._look_up(request)
        if not missing:
            recording = found[0]
            yield from recording.chunks if recording.chunks is not None else (recording.text,)
            return
        chunks: list[str] = []
        for chunk in self.runner.stream_completion(request):
            chunks.append(chunk)
            yield chunk
        text = "".join(chunks)
        self.cassette.record(keys[0], Recording(text, "stop", Usage(), tuple(chunks)))

    def train_examples(self, examples: Any, options: Any) -> Any:
        """Fine-tune the real runner (a replay-only cassette cannot)."""
        result = self.runner.train_examples(examples, options)
        self.model_name = self.runner.model_name
        return result

    def evaluate_examples(self, examples: Any) -> Any:
        """Evaluate with the real runner (a replay-only cassette cannot)."""
        return self.runner.evaluate_examples(examples)

    # ------------------------------------------------------------------ helpers
    def _look_up(
        self, request: CompletionRequest
    ) -> tuple[list[dict[str, Any]], dict[int, Recording], list[int]]:
        keys = [self.cassette.key_of(self, prompt, request) for prompt in request.prompts]
        found: dict[int, Recording] = {}
        missing: list[int] = []
        for i, key in enumerate(keys):
            recording = None if self.cassette.mode == "record" else self.cassette.play(key)
            if recording is not None:
                found[i] = recording
            elif not self._records:
                raise self.cassette.miss(key)
            else:
                missing.append(i)
        return keys, found, missing

    def _partly_failed(
        self,
        keys: list[dict[str, Any]],
        found: dict[int, Recording],
        missing: list[int],
        error: BatchError,
        total: int,
    ) -> BatchError:
        """Record the items the real runner answered; the BatchError in the caller's item numbers."""
        answered = error.results if len(error.results) == len(missing) else [None] * len(missing)
        for position, index in enumerate(missing):
            item = answered[position]
            if position not in error.failures and isinstance(item, Completion | str):
                done = Completion(item) if isinstance(item, str) else item
                found[index] = Recording(done.text, done.finish_reason, done.usage)
                self.cassette.record(keys[index], found[index])
        if len(missing) == total:
            return error  # the real runner saw the whole batch: its item numbers are the caller's
        return renumbered(
            error, missing, [found[i].completion() if i in found else None for i in range(total)]
        )

    def _fill(
        self,
        keys: list[dict[str, Any]],
        found: dict[int, Recording],
        missing: list[int],
        completions: list[Completion],
    ) -> None:
        if not isinstance(completions, list) or len(completions) != len(missing):
            count = len(completions) if isinstance(completions, list) else type(completions).__name__
            raise InvalidInputError(
                f"{self.runner!r} returned {count} completions for {len(missing)} prompts"
            )
        for i, done in zip(missing, completions, strict=True):
            done = Completion(done) if isinstance(done, str) else done
            recording = Recording(done.text, done.finish_reason, done.usage)
            self.cassette.record(keys[i], recording)
            found[i] = recording


def cassette(path: str | os.PathLike[str], mode: CassetteMode = "replay") -> Cassette:
    """A :class:`Cassette` on ``path``; use it as ``with cassette(path, mode) as tape:``."""
    return Cassette(path, mode)


# ---------------------------------------------------------------------- helpers
def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _secret_option_values(options: Mapping[str, Any]) -> set[str]:
    found: set[str] = set()
    for name, value in options.items():
        if isinstance(value, Mapping):
            found |= _secret_option_values(value)
        elif isinstance(value, str) and _SECRET_NAME.search(str(name)):
            found.add(value)
    return found


def _secret_env_values() -> set[str]:
    return {
        value
        for name, value in os.environ.items()
        if _SECRET_NAME.search(name) and len(value) >= _MIN_SECRET and not name.startswith("PYTEST")
    }
