"""Grammar-constrained JSON decoding with xgrammar.

:func:`json_constraint` turns a JSON Schema (an output type's, or a raw one given with
``output_schema=``) into a per-batch :class:`JsonSchemaConstraint` that the decode loop
drives step by step (``mask_logits`` -> pick a token -> ``advance`` -> ``finished``). The
schema is first normalized and planned for the token budget with
:func:`~llmrun.backends.local.reply_plan.plan_reply` (``$ref``, ``allOf``, free keys,
formats ... see :mod:`~llmrun.backends.local.schema_normalize`): the grammar keeps the
schema's own bounds, and the budget follows what each reply has written.

xgrammar's grammar decides what may come next. On top of it, per row, the constraint:

* keeps every reply closable within ``max_new_tokens``: a
  :class:`~llmrun.backends.local.reply_tracker.ReplyTracker` follows the reply through
  the schema and knows the tokens of its shortest valid closing; a chosen token after
  which that would exceed the tokens left is replaced (in place, in ``advance``) by the
  model's next best allowed token that fits, else by one byte that does;
* inside the values the plan keeps statically bounded, caps each string's content at
  the value's share ``T`` tokens: then only tokens that close it are allowed (as soon
  as the grammar lets it close). This needs the row's string state (outside / inside /
  after a backslash), which follows from the ``"`` and ``\\`` in each chosen token;
* never allows tokens holding a raw control character (invalid in JSON strings),
  ``\\u`` escapes (a lone surrogate escape is invalid JSON for pydantic; every other
  character can be written as itself), UTF-8 surrogates (``ED A0..BF``, which xgrammar
  accepts but decoding turns into U+FFFD), or the tokenizer's special tokens other than
  the stop tokens (xgrammar takes ``<s>`` or ``<|padding|>`` for text, decoding drops them).

Output is compact JSON: no whitespace anywhere and separators ``,``/``:``, so a weak
model cannot spin on spaces.

The per-token facts behind these rules (which tokens are banned, how each moves the string
state) are built once per tokenizer by :mod:`~llmrun.backends.local.grammar_tokens`.

Caches: one ``xgr.TokenizerInfo`` + ``xgr.GrammarCompiler`` + token tables per
(tokenizer object, logits width), and one compiled grammar per (that, bounded schema),
so repeated calls never recompile.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import threading
import weakref
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy
import torch
import xgrammar as xgr

from llmrun.backends.local.grammar_tokens import ESC, OUT, TokenTables, token_tables
from llmrun.backends.local.reply_plan import ReplyPlan, plan_reply
from llmrun.backends.local.reply_tracker import ReplyTracker
from llmrun.errors import GenerationError, InvalidInputError, SchemaError

__all__ = [
    "CompiledJsonGrammar",
    "JsonSchemaConstraint",
    "TokenTables",
    "compile_json_grammar",
    "json_constraint",
]

#: Compiled grammars kept per tokenizer (least recently used dropped first).
GRAMMAR_CACHE_SIZE = 64
_SEPARATORS = (",", ":")
_Backend = Literal["cpu", "triton", "torch_native"]


class _MaskCache:
    """Float masks (``+inf`` allowed, ``-inf`` not) of recently seen bitmask rows, per tokenizer.

    A batch of rows writing the same schema keeps meeting the same grammar states, so on the
    CPU ``torch.minimum(logits, mask)`` with a cached mask is several times faster than
    xgrammar's bit-by-bit kernel. Masks are kept as chunks below torch's parallel grain size:
    a parallel region for a few microseconds of work costs milliseconds when the cores are
    busy. Least recently used masks are dropped first; at most ``max_bytes`` in all.
    """

    def __init__(self, vocab_size: int, max_bytes: int = 32 * 2**20) -> None:
        self.vocab_size = vocab_size
        self.capacity = max(16, max_bytes // (4 * vocab_size))
        self._masks: OrderedDict[bytes, tuple[torch.Tensor, ...]] = OrderedDict()
        self._lock = threading.Lock()

    def apply(self, logits: torch.Tensor, bits: torch.Tensor) -> None:
        """Set ``logits`` ``[V]`` (float32, CPU) to ``-inf`` where the bitmask row ``bits`` ``[W]`` is 0."""
        for part, mask in zip(torch.split(logits, _CHUNK), self._get(bits), strict=True):
            torch.minimum(part, mask, out=part)

    def _get(self, bits: torch.Tensor) -> tuple[torch.Tensor, ...]:
        key = bits.numpy().tobytes()
        with self._lock:
            found = self._masks.get(key)
            if found is not None:
                self._masks.move_to_end(key)
                return found
        mask = torch.from_numpy(numpy.full((1, self.vocab_size), numpy.inf, dtype=numpy.float32))
        xgr.apply_token_bitmask_inplace(mask, bits.view(1, -1), vocab_size=self.vocab_size, backend="cpu")
        chunks = tuple(torch.split(mask[0], _CHUNK))
        with self._lock:
            self._masks[key] = chunks
            if len(self._masks) > self.capacity:
                self._masks.popitem(last=False)
        return chunks


#: Elements per elementwise op on the CPU: below torch's parallel grain size (32768).
_CHUNK = 32768


@dataclass(frozen=True, eq=False)
class CompiledJsonGrammar:
    """A JSON Schema compiled for one tokenizer and logits width; build with :func:`compile_json_grammar`."""

    grammar: xgr.CompiledGrammar
    #: The JSON Schema text the grammar was compiled from (already bounded).
    schema_json: str
    #: Logits width (the model's vocabulary, padding ids included).
    vocab_size: int
    #: The tokenizer's token tables, shared by all its grammars.
    tables: TokenTables
    #: The tokenizer's cache of float masks, shared by all its grammars.
    masks: _MaskCache

    @property
    def schema(self) -> dict[str, Any]:
        """The (bounded) JSON Schema the grammar was compiled from."""
        schema: dict[str, Any] = json.loads(self.schema_json)
        return schema


class _TokenizerGrammars:
    """xgrammar's per-tokenizer state, the token tables and the compiled grammars."""

    def __init__(self, tokenizer: Any, vocab_size: int) -> None:
        self.vocab_size = vocab_size
        try:
            self.info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size)
        except Exception as exc:  # xgrammar raises ValueError/RuntimeError for tokenizers it cannot read
            raise InvalidInputError(
                f"xgrammar cannot use this tokenizer ({type(tokenizer).__name__}) with a logits width of "
                f"{vocab_size}: {exc}"
            ) from exc
        self.compiler = xgr.GrammarCompiler(self.info, max_threads=1)
        self.tables = token_tables(self.info, tokenizer, vocab_size)
        self.masks = _MaskCache(vocab_size)
        self.grammars: OrderedDict[str, CompiledJsonGrammar] = OrderedDict()

    def compile(self, key: str) -> CompiledJsonGrammar:
        """Compile (or fetch) the grammar of the JSON Schema text ``key``."""
        hit = self.grammars.get(key)
        if hit is not None:
            self.grammars.move_to_end(key)
            return hit
        try:
            grammar = self.compiler.compile_json_schema(
                key, any_whitespace=False, indent=None, separators=_SEPARATORS, strict_mode=True
            )
        except Exception as exc:  # xgrammar raises RuntimeError / InvalidJSONError on schemas it rejects
            title = json.loads(key).get("title", "the output type")
            what = "a 'pattern' the grammar engine cannot read" if "Regex" in str(exc) else "it"
            raise SchemaError(
                f"the JSON Schema of {title} cannot be compiled into a grammar ({what}): {exc}"
            ) from exc
        compiled = CompiledJsonGrammar(grammar, key, self.vocab_size, self.tables, self.masks)
        self.grammars[key] = compiled
        if len(self.grammars) > GRAMMAR_CACHE_SIZE:
            self.grammars.popitem(last=False)
        return compiled


_LOCK = threading.Lock()
_BY_TOKENIZER: weakref.WeakKeyDictionary[Any, dict[int, _TokenizerGrammars]] = weakref.WeakKeyDictionary()
_BY_ID: dict[int, tuple[Any, dict[int, _TokenizerGrammars]]] = {}


def _tokenizer_grammars(tokenizer: Any, vocab_size: int) -> _TokenizerGrammars:
    try:
        per_width = _BY_TOKENIZER.setdefault(tokenizer, {})
    except TypeError:  # not weak-referenceable: keep it alive, keyed by identity
        per_width = _BY_ID.setdefault(id(tokenizer), (tokenizer, {}))[1]
    entry = per_width.get(vocab_size)
    if entry is None:
        entry = per_width[vocab_size] = _TokenizerGrammars(tokenizer, vocab_size)
    return entry


def compile_json_grammar(tokenizer: Any, schema: Mapping[str, Any], vocab_size: int) -> CompiledJsonGrammar:
    """Compile a (bounded) JSON Schema for ``tokenizer`` and a logits width of ``vocab_size``; cached.

    ``tokenizer`` is a Hugging Face tokenizer (byte-level BPE or SentencePiece-style).
    The same tokenizer object, width and schema return the same object every time.
    """
    return _compile(tokenizer, json.dumps(schema, separators=_SEPARATORS, ensure_ascii=False), vocab_size)


def _compile(tokenizer: Any, schema_json: str, vocab_size: int) -> CompiledJsonGrammar:
    _check_positive("vocab_size", vocab_size)
    with _LOCK:
        return _tokenizer_grammars(tokenizer, vocab_size).compile(schema_json)


def json_constraint(
    tokenizer: Any, schema: Mapping[str, Any], batch_size: int, vocab_size: int, *, max_new_tokens: int
) -> JsonSchemaConstraint:
    """A constraint that makes each of ``batch_size`` rows write one JSON value valid for ``schema``.

    ``schema`` is any JSON Schema (a pydantic ``model_json_schema()`` or a raw one); it is
    normalized and planned for ``max_new_tokens`` here (see
    :mod:`~llmrun.backends.local.reply_plan`), so every row finishes within the budget.
    ``vocab_size`` is the model's logits width. Raises
    :class:`~llmrun.errors.InvalidInputError` when the budget cannot hold even the smallest
    value (saying how many tokens it needs), and :class:`~llmrun.errors.SchemaError` /
    :class:`~llmrun.errors.UnsupportedFeatureError` naming the keyword for schemas that
    cannot be generated.
    """
    if not isinstance(schema, Mapping):
        raise InvalidInputError(f"the output schema must be a JSON Schema dict, got {type(schema).__name__}")
    grammar_json, plan = _planned(
        json.dumps(schema, separators=_SEPARATORS, ensure_ascii=False), max_new_tokens
    )
    return JsonSchemaConstraint(
        _compile(tokenizer, grammar_json, vocab_size),
        batch_size,
        plan=plan,
        max_new_tokens=max_new_tokens,
    )


@functools.lru_cache(maxsize=256)
def _planned(schema_json: str, max_new_tokens: int) -> tuple[str, ReplyPlan]:
    plan = plan_reply(json.loads(schema_json), max_new_tokens)
    return json.dumps(plan.schema, separators=_SEPARATORS, ensure_ascii=False), plan


class JsonSchemaConstraint:
    """Constrains a batch of rows to a compiled JSON grammar, one ``xgr.GrammarMatcher`` per row.

    ``plan`` and ``max_new_tokens`` (together) make each row keep its reply closable within
    the budget: a :class:`~llmrun.backends.local.reply_tracker.ReplyTracker` per row follows
    the reply, and a chosen token after which the shortest valid closing would no longer fit
    the tokens left is replaced, in place in ``advance``'s tensor, by the model's best allowed
    token that fits (from the logits ``mask_logits`` saw), else by one byte that does.
    ``string_tokens`` caps each string's content inside the plan's bounded values (without a
    plan: every string; ``None``: no cap). The next-token bitmask ``[B, ceil(V / 32)]`` is
    filled right after each ``advance`` (and at construction), so ``finished`` knows when a
    row's JSON is closed: only stop tokens can follow. Finished rows are left alone. After
    :meth:`select_rows` the logits and tokens cover only the kept rows; :meth:`finished`
    still reports every row of the original batch.
    """

    def __init__(
        self,
        compiled: CompiledJsonGrammar,
        batch_size: int,
        *,
        string_tokens: int | None = None,
        plan: ReplyPlan | None = None,
        max_new_tokens: int | None = None,
    ) -> None:
        _check_positive("batch_size", batch_size)
        if string_tokens is not None and (
            isinstance(string_tokens, bool) or not isinstance(string_tokens, int) or string_tokens < 0
        ):
            raise InvalidInputError(f"string_tokens={string_tokens!r} is invalid: it must be an integer >= 0")
        if (plan is None) != (max_new_tokens is None):
            raise InvalidInputError("plan and max_new_tokens go together: pass both or neither")
        if max_new_tokens is not None:
            _check_positive("max_new_tokens", max_new_tokens)
        self.compiled = compiled
        self.batch_size = batch_size
        self.string_tokens = string_tokens
        self.plan = plan
        self.max_new_tokens = max_new_tokens
        self._tables = compiled.tables
        self._matchers = [xgr.GrammarMatcher(compiled.grammar) for _ in range(batch_size)]
        self._bitmask = xgr.allocate_token_bitmask(batch_size, compiled.vocab_size)  # [B, W] int32
        self._not_stop = ~compiled.tables.stop_bits  # [W]
        self._done = [False] * batch_size
        self._state = [OUT] * batch_size  # string state of each row
        self._spent = [0] * batch_size  # tokens of content in the row's open string
        self._after_ed = [False] * batch_size  # the row's text ends in a lone 0xED lead byte
        self._rows = list(range(batch_size))  # the original row of each row of the current batch
        self._trackers = [ReplyTracker(plan.root) for _ in range(batch_size)] if plan is not None else None
        self._taken = [0] * batch_size  # tokens each row has written
        self._logits: torch.Tensor | None = None  # this step's masked logits [b, V], for picking again
        self.replaced = 0  # tokens replaced to keep replies closable (all rows)
        self._fill(list(range(batch_size)))

    def select_rows(self, index: torch.Tensor) -> None:
        """Keep only the rows at ``index`` (positions in the current batch), as the decode loop does."""
        positions = [int(j) for j in index.reshape(-1).tolist()]
        if any(j < 0 or j >= len(self._rows) for j in positions):
            raise GenerationError(f"select_rows() got {positions} for a batch of {len(self._rows)} rows")
        self._rows = [self._rows[j] for j in positions]
        self._logits = None

    def mask_logits(self, logits: torch.Tensor) -> None:
        """Set the logits of tokens the grammar forbids to ``-inf``, in place, for running rows."""
        width, batch = self.compiled.vocab_size, len(self._rows)
        if logits.dim() != 2 or logits.shape[0] != batch or logits.shape[1] < width:
            raise GenerationError(
                f"logits of shape {tuple(logits.shape)} do not fit this constraint: expected "
                f"[{batch}, >= {width}] (batch size, model vocabulary)"
            )
        self._logits = logits
        running = [j for j, row in enumerate(self._rows) if not self._done[row]]
        if not running:
            return
        indices = None if len(running) == batch else running
        if logits.device.type == "cpu" and logits.dtype == torch.float32:
            for j in running:
                self.compiled.masks.apply(logits[j, :width], self._bitmask[self._rows[j]])  # [V]
        else:
            bitmask = self._bitmask if batch == self.batch_size else self._bitmask[self._rows]  # [b, W]
            backend: _Backend = "cpu"
            if logits.device.type != "cpu":
                bitmask = bitmask.to(logits.device, non_blocking=True)
                backend = _device_backend(logits.device)
            xgr.apply_token_bitmask_inplace(
                logits, bitmask, vocab_size=width, indices=indices, backend=backend
            )
        if logits.shape[1] > width:  # ids past the vocabulary the grammar knows
            rows = slice(None) if indices is None else torch.tensor(indices, device=logits.device)
            logits[rows, width:] = float("-inf")

    def advance(self, tokens: torch.Tensor) -> None:
        """Feed each running row its chosen token (``tokens``: ``[b]``); finished rows are ignored.

        A token that would leave a row's reply unable to close within the budget is replaced
        in ``tokens`` (in place) before it is taken; see the class docstring.
        """
        ids = tokens.reshape(-1).tolist()  # [b]
        if len(ids) != len(self._rows):
            raise GenerationError(f"advance() got {len(ids)} tokens for a batch of {len(self._rows)} rows")
        tables = self._tables
        running: list[int] = []
        for j, (row, token) in enumerate(zip(self._rows, ids, strict=True)):
            if self._done[row]:
                continue
            token = int(token)
            if self._trackers is not None:
                kept = self._keep_closable(j, row, token)
                if kept != token:
                    tokens.view(-1)[j] = kept
                    token = kept
            matcher, state = self._matchers[row], self._state[row]
            if not matcher.accept_token(token):
                raise GenerationError(
                    f"token {token} in row {row} is not allowed by the output grammar; "
                    "mask_logits() must be applied before the token is chosen"
                )
            self._taken[row] += 1
            self._state[row] = tables.next_state[state][token]
            self._spent[row] = 0 if tables.crosses_quote[state][token] else self._spent[row] + 1
            self._after_ed[row] = token in tables.ends_with_ed
            if matcher.is_terminated():
                self._done[row] = True
            else:
                running.append(row)
        self._logits = None
        if running:
            self._fill(running)

    def finished(self) -> list[bool]:
        """Per row: the JSON value is closed (only a stop token could follow), so the row must stop."""
        return list(self._done)

    def _keep_closable(self, j: int, row: int, token: int) -> int:
        """``token``, or the token that replaces it so the row's reply can still close in its budget."""
        assert self._trackers is not None
        assert self.max_new_tokens is not None
        tracker, data = self._trackers[row], self._tables.token_bytes
        left = self.max_new_tokens - self._taken[row] - 1  # tokens left once this one is taken
        if token in self._tables.stop_ids:
            return token
        before = tracker.snapshot()
        tracker.feed(data[token])
        if tracker.cost() <= left:
            return token
        tracker.restore(before)
        bits = self._bitmask[row].numpy()

        def allowed(t: int) -> bool:
            return 0 <= t < len(data) and bool((int(bits[t >> 5]) >> (t & 31)) & 1)

        if not allowed(token):
            return token  # a token the grammar refuses is the caller's error, reported by advance()

        for t in sorted(self._tables.stop_ids):
            if allowed(t):
                return t  # the value is complete: end it
        best, best_cost = -1, 1 << 30
        for t in self._candidates(j, tracker.hint(), self._tables.byte_tokens):
            if t == token or not allowed(t):
                continue
            tracker.feed(data[t])
            cost = tracker.cost()
            tracker.restore(before)
            if cost <= left:
                best = t
                break
            if cost < best_cost:
                best, best_cost = t, cost
        if best < 0:  # nothing allowed among the candidates (cannot happen with byte tokens): keep it
            best = token
        tracker.feed(data[best])
        self.replaced += 1
        return best

    def _candidates(self, j: int, hint: int | None, byte_tokens: tuple[int, ...]) -> list[int]:
        """Tokens to try instead: the model's next best (this step's logits), then single bytes
        (the closing's next byte first, where the tracker knows it)."""
        out: list[int] = []
        logits = self._logits
        if logits is not None and j < logits.shape[0]:
            top = torch.topk(logits[j, : self.compiled.vocab_size].float(), _REPICK)
            out += [
                int(t) for v, t in zip(top.values.tolist(), top.indices.tolist(), strict=True) if v > -1e30
            ]
        order = _BYTE_ORDER if hint is None else (hint, *_BYTE_ORDER)
        out += [byte_tokens[b] for b in order if byte_tokens[b] >= 0]
        return out

    def _fill(self, rows: list[int]) -> None:
        """Fill the next-token bitmask of ``rows`` and mark rows whose JSON is closed."""
        for row in rows:  # in this thread: xgr.BatchGrammarMatcher's hand-offs cost ms on busy cores
            self._matchers[row].fill_next_token_bitmask(self._bitmask, row)
        tables, cap, trackers = self._tables, self.string_tokens, self._trackers
        if len(rows) == self.batch_size:
            self._bitmask &= tables.allowed_bits  # [B, W]
        else:
            self._bitmask[rows] &= tables.allowed_bits
        for row in rows:
            mask, state = self._bitmask[row], self._state[row]  # [W]
            if self._after_ed[row]:
                mask &= tables.after_ed_bits
            if state == ESC:
                mask &= tables.after_backslash_bits
            if trackers is not None:
                cap = trackers[row].string_cap()
            if state != OUT and cap is not None and self._spent[row] >= cap:
                closing = mask & tables.closing_bits[state - 1]
                if bool(closing.any()):  # else the string cannot close yet (mid character or minLength)
                    mask.copy_(closing)
            if self._matchers[row].is_completed() and not bool((mask & self._not_stop).any()):
                self._done[row] = True


#: Next-best tokens of the model tried before single bytes when a token must be replaced.
_REPICK = 8
#: Single bytes tried to keep a reply closable: closing ones first, then the smallest values' bytes.
_BYTE_ORDER = tuple(dict.fromkeys([*b'"}],:0atn[{-1', *range(256)]))  # "0": numbers' smallest value


def _device_backend(device: torch.device) -> _Backend:
    if device.type == "cuda" and importlib.util.find_spec("triton") is not None:
        return "triton"
    return "torch_native"


def _check_positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidInputError(f"{name}={value!r} is invalid: it must be a positive integer")
