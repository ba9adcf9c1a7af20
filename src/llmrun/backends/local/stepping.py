"""A step-level batch: rows join and leave between decode steps (what a server batches requests into).

::

    batch = engine.batch()
    row = batch.add("Once upon a time", GenerationConfig(max_new_tokens=20))
    typed = batch.add(prompt, config, OutputSpec.for_type(Answer))  # typed and untyped rows mix
    while batch.busy:
        for done in batch.step():                                 # one token for every row
            print(done.completion)                                # Completion: text, finish, usage
    row.cancel()                                                  # leaves at the next step

Rows added between two steps are prefilled together at the next :meth:`EngineBatch.step`; then
they join the running rows: on the native forward their KV caches are right-aligned into one
(:meth:`~llmrun.backends.local.forward.Session.join`), so every running row shares one forward
per step. Rows that sample with their own state (a seed or a repetition penalty) or that the
generic forward runs keep a group of their own, stepped in the same call. A row leaves the
batch when it ends (end-of-sequence token, stop sequence, closed JSON, budget) or is cancelled.
Each :meth:`step` holds the engine's lock for that step only.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from llmrun.backends.local.decode import decode_one_token, eval_mode, left_pad, prefill
from llmrun.backends.local.sampling import Sampler
from llmrun.backends.local.text import TextDeltas, stop_sequence_hit
from llmrun.errors import InvalidInputError
from llmrun.generation import GenerationConfig, cut_at_stop
from llmrun.runner import Completion, FinishReason, OutputSpec, Usage

if TYPE_CHECKING:
    from llmrun.backends.local.engine import LocalEngine
    from llmrun.backends.local.forward import Session

__all__ = ["EngineBatch", "Row"]


@dataclass(eq=False)
class Row:
    """One prompt in an :class:`EngineBatch`: its tokens so far, and its :class:`Completion` once done."""

    prompt_ids: list[int]
    config: GenerationConfig
    output: OutputSpec | None
    budget: int
    constraint: Any | None
    deltas: TextDeltas
    tokens: list[int] = field(default_factory=list)
    completion: Completion | None = None
    cancelled: bool = False

    @property
    def done(self) -> bool:
        """Finished (``completion`` is set) or cancelled."""
        return self.completion is not None or self.cancelled

    def cancel(self) -> None:
        """Stop this row; it leaves the batch at the next step (safe from any thread)."""
        self.cancelled = True

    def text_delta(self) -> str:
        """Text generated since the last call that can no longer change (for streaming)."""
        return self.deltas.take(self.tokens, final=self.completion is not None)


def _sampling_key(config: GenerationConfig) -> tuple[Any, ...]:
    return (config.temperature, config.top_p, config.top_k, config.repetition_penalty, config.seed)


@dataclass(eq=False)
class _Group:
    """Rows that share one session and one sampler; ``None`` marks a row that left a session
    that cannot drop rows."""

    session: Session
    sampler: Sampler
    key: tuple[Any, ...]
    rows: list[Row | None]
    pending: torch.Tensor | None = None  # [b] each row's last token, fed at the next step

    @property
    def can_join(self) -> bool:
        """Its sampler keeps no per-row state (no seed, no penalty), so other rows may share it."""
        return self.sampler.history is None and self.sampler.generator is None


class EngineBatch:
    """A batch of rows on one :class:`~llmrun.backends.local.engine.LocalEngine`; see the module doc."""

    def __init__(self, engine: LocalEngine) -> None:
        self.engine = engine
        self._waiting: list[Row] = []
        self._groups: list[_Group] = []
        self._add_lock = threading.Lock()

    def add(
        self, prompt: str | Sequence[int], config: GenerationConfig, output: OutputSpec | None = None
    ) -> Row:
        """Queue a prompt (text, or token ids); it joins at the next :meth:`step`. Safe from any thread.

        The prompt is checked against the context now (:class:`~llmrun.errors.PromptTooLongError`),
        and a typed row's grammar is built now, so bad rows fail here, not mid-batch.
        """
        return self.admit(self.prepare(prompt, config, output))

    def prepare(
        self, prompt: str | Sequence[int], config: GenerationConfig, output: OutputSpec | None = None
    ) -> Row:
        """A checked row not queued yet (the checks and grammar of :meth:`add`); queue it with :meth:`admit`.

        A server prepares rows on worker threads, then admits them when the batch has room.
        """
        if not isinstance(config, GenerationConfig):
            raise InvalidInputError(f"config must be a llmrun GenerationConfig, got {type(config).__name__}")
        engine = self.engine
        budget = config.budget(typed=output is not None)
        ids = engine.encode(prompt, budget) if isinstance(prompt, str) else engine.check_ids(prompt, budget)
        constraint = engine.constraint(output, 1, budget) if output is not None else None
        return Row(ids, config, output, budget, constraint, engine.text_deltas(config.stop))

    def admit(self, row: Row) -> Row:
        """Queue a row from :meth:`prepare`; it joins at the next :meth:`step`. Safe from any thread."""
        if not isinstance(row, Row) or row.tokens or row.completion is not None:
            raise InvalidInputError("admit() takes a fresh row from EngineBatch.prepare()")
        with self._add_lock:
            self._waiting.append(row)
        return row

    @property
    def rows(self) -> list[Row]:
        """Rows not finished yet: waiting to join, or running."""
        running = [r for g in self._groups for r in g.rows if r is not None and not r.done]
        with self._add_lock:
            return [r for r in self._waiting if not r.done] + running

    @property
    def groups(self) -> int:
        """Forward passes per step: 1 when every running row shares one session."""
        return len(self._groups)

    @property
    def busy(self) -> bool:
        """Whether some row is still waiting or running."""
        return bool(self.rows)

    def close(self) -> None:
        """Cancel every row and free the batch's KV caches."""
        with self._add_lock:
            waiting, self._waiting = self._waiting, []
        running = [r for g in self._groups for r in g.rows if r is not None]
        for row in [*waiting, *running]:
            row.cancel()
        self._groups = []

    def step(self) -> list[Row]:
        """One token for every running row (prefilling rows that joined); returns the rows that finished."""
        with self._add_lock:
            joining, self._waiting = [r for r in self._waiting if not r.cancelled], []
        finished: list[Row] = []
        engine = self.engine
        with engine.lock, torch.inference_mode(), eval_mode(engine.model):
            decoder = engine.prepared.decoder()
            self._groups += self._start(decoder, joining)
            for group in self._groups:
                finished += self._advance(group)
            self._groups = [g for g in self._groups if any(r is not None for r in g.rows)]
            self._merge()
        return finished

    def run(self) -> list[Completion]:
        """Step until every row is done; the completions of the rows queued, in order."""
        with self._add_lock:
            rows = list(self._waiting)
        while self.busy:
            self.step()
        return [r.completion for r in rows if r.completion is not None]

    # ---------------------------------------------------------------------------- internals
    def _start(self, decoder: Any, rows: list[Row]) -> list[_Group]:
        """A new group per sampling setting for the rows that joined (prefilled at their first step)."""
        by_key: dict[tuple[Any, ...], list[Row]] = {}
        for row in rows:
            by_key.setdefault(_sampling_key(row.config), []).append(row)
        groups = []
        for key, members in by_key.items():
            config = members[0].config
            input_ids, mask = left_pad([r.prompt_ids for r in members], device=self.engine.device)
            budget = max(r.budget for r in members)
            argmax_only = config.greedy and config.repetition_penalty == 1.0
            session = decoder.start(
                input_ids, mask, budget, argmax_only=argmax_only, vocab_size=self.engine.vocab_size
            )
            sampler = Sampler(config, input_ids, mask, budget)
            groups.append(_Group(session, sampler, key, list(members)))
        return groups

    def _advance(self, group: _Group) -> list[Row]:
        """Run the group's forward, choose one token per row, and retire the rows that ended."""
        if group.pending is None:
            logits = prefill(group.session)  # [b, V]
        else:
            logits = decode_one_token(group.session, group.pending)
        rows = group.rows
        for j, row in enumerate(rows):
            if row is not None and row.constraint is not None:
                row.constraint.mask_logits(logits[j : j + 1])
        vocab = self.engine.vocab_size
        if vocab < logits.shape[1]:
            logits[:, vocab:] = float("-inf")
        tokens = group.sampler.choose(logits)  # [b]
        if group.sampler.greedy:
            tokens = group.session.refine_argmax(logits, tokens)
        for j, row in enumerate(rows):
            if row is not None and row.constraint is not None and not row.cancelled:
                row.constraint.advance(tokens[j : j + 1])
        group.sampler.record(tokens)
        finished: list[Row] = []
        keep: list[int] = []
        for j, (row, token) in enumerate(zip(rows, tokens.tolist(), strict=True)):
            if row is None:
                keep.append(j)
                continue
            if not row.cancelled:
                reason = self._take(row, token)
                if reason is not None:
                    row.completion = self._completion(row, reason)
                    finished.append(row)
            if not row.done:
                keep.append(j)
        self._leave(group, keep, tokens)
        return finished

    def _take(self, row: Row, token: int) -> FinishReason | None:
        """Add ``token`` to ``row``; why the row ends with it, or None."""
        if token in self.engine.eos_token_ids:
            return "stop"
        row.tokens.append(token)
        if row.constraint is not None and row.constraint.finished()[0]:
            return "stop"
        if row.config.stop and stop_sequence_hit(self.engine.decode, row.tokens, row.config.stop):
            return "stop"
        return "length" if len(row.tokens) >= row.budget else None

    def _completion(self, row: Row, reason: FinishReason) -> Completion:
        text = cut_at_stop(self.engine.decode(row.tokens), row.config.stop)
        return Completion(text, reason, Usage(len(row.prompt_ids), len(row.tokens)))

    @staticmethod
    def _leave(group: _Group, keep: list[int], tokens: torch.Tensor) -> None:
        """Keep only the rows at ``keep``; ``tokens`` ``[b]`` become the group's next input."""
        group.pending = tokens
        if len(keep) == len(group.rows):
            return
        if not group.session.can_select_rows:  # the rows stay in the session, ignored
            group.rows = [r if j in keep else None for j, r in enumerate(group.rows)]
            return
        index = torch.tensor(keep, dtype=torch.long, device=tokens.device)
        group.session.select_rows(index)
        group.sampler.select_rows(index)
        group.rows = [group.rows[j] for j in keep]
        group.pending = tokens.index_select(0, index)

    def _merge(self) -> None:
        """Join groups with the same sampling settings into one session where the forward allows it."""
        merged: list[_Group] = []
        for group in self._groups:
            target = next(
                (m for m in merged if m.key == group.key and m.can_join and group.can_join),
                None,
            )
            if (
                target is not None
                and target.pending is not None
                and group.pending is not None
                and target.session.join(group.session)
            ):
                target.rows += group.rows
                target.pending = torch.cat([target.pending, group.pending])
                continue
            merged.append(group)
        self._groups = merged
