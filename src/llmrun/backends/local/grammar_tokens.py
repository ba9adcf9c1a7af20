"""The token tables the JSON grammar constraint adds to xgrammar's masks, per tokenizer.

:func:`token_tables` reads a tokenizer's vocabulary once and records, per token, what
:class:`~llmrun.backends.local.grammar.JsonSchemaConstraint` needs beyond xgrammar's grammar:
which tokens may appear in compact JSON at all (no raw control characters, no UTF-8
surrogates, no special tokens but the stop tokens), which are stop tokens, which are banned
after a lone ``ED`` lead byte or after a backslash (no ``\\u`` escapes), and how each token
moves a row's string state (:data:`OUT` / :data:`IN` / :data:`ESC`) from the ``"`` and
``\\`` it holds.
"""

from __future__ import annotations

import gc
import re
from dataclasses import dataclass
from typing import Any

import numpy
import torch
import xgrammar as xgr

__all__ = ["ESC", "IN", "OUT", "TokenTables", "token_tables"]

#: String states of a row, from the '"' and '\' it has written: outside a string, inside, after a backslash.
OUT, IN, ESC = 0, 1, 2
_CONTROL = re.compile("[\\x00-\\x1f]")


@dataclass(frozen=True, eq=False)
class TokenTables:
    """Per-tokenizer token facts the constraint adds to xgrammar's masks.

    Bit masks are ``[ceil(V / 32)]`` int32 in xgrammar's layout (token ``i`` is bit
    ``i % 32`` of word ``i // 32``).
    """

    #: Tokens that may appear in compact JSON at all (see :mod:`~llmrun.backends.local.grammar`).
    allowed_bits: torch.Tensor
    #: The stop tokens.
    stop_bits: torch.Tensor
    #: Tokens allowed right after a lone ``ED`` lead byte: all but those starting with ``A0..BF``.
    after_ed_bits: torch.Tensor
    #: Tokens allowed right after a backslash in a string: all but ``u...`` (no ``\\u`` escapes).
    after_backslash_bits: torch.Tensor
    #: Per string state ``IN``/``ESC``: tokens that close the string they start in.
    closing_bits: tuple[torch.Tensor, torch.Tensor]
    #: Per string state: the state after each token (``bytes`` of length V).
    next_state: tuple[bytes, bytes, bytes]
    #: Per string state: whether the token passes a ``"`` (so an open string at its end is new).
    crosses_quote: tuple[bytes, bytes, bytes]
    #: Ids of the tokens that end in a lone ``ED`` lead byte.
    ends_with_ed: frozenset[int]
    #: Each token's bytes (``b""`` for special tokens), as the reply tracker reads them.
    token_bytes: tuple[bytes, ...] = ()
    #: Per byte value: an allowed token that is exactly that byte, or -1.
    byte_tokens: tuple[int, ...] = ()
    #: The stop tokens' ids.
    stop_ids: frozenset[int] = frozenset()


def token_tables(info: xgr.TokenizerInfo, tokenizer: Any, vocab_size: int) -> TokenTables:
    gc_was_enabled = gc.isenabled()
    gc.disable()  # tens of thousands of small objects: collections would cost more than the work
    try:
        return _build_token_tables(info, tokenizer, vocab_size)
    finally:
        if gc_was_enabled:
            gc.enable()


def _build_token_tables(info: xgr.TokenizerInfo, tokenizer: Any, vocab_size: int) -> TokenTables:
    texts, partial = _token_texts(info, tokenizer)
    allowed = numpy.ones(vocab_size, dtype=bool)
    allowed[[i for i, text in enumerate(texts) if _CONTROL.search(text)]] = False  # raw control characters
    allowed[[i for i, piece in partial.items() if _has_surrogate(piece)]] = False
    special = set(getattr(tokenizer, "all_special_ids", None) or ())
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    special |= {int(i) for i, token in added.items() if getattr(token, "special", False)}
    allowed[[i for i in special - set(info.stop_token_ids) if 0 <= i < vocab_size]] = False
    stop = numpy.zeros(vocab_size, dtype=bool)
    stop[[i for i in info.stop_token_ids if i < vocab_size]] = True
    after_ed = numpy.ones(vocab_size, dtype=bool)
    after_ed[[i for i, piece in partial.items() if 0xA0 <= piece[0] <= 0xBF]] = False
    after_backslash = numpy.ones(vocab_size, dtype=bool)
    after_backslash[[i for i, text in enumerate(texts) if text.startswith("u")]] = False

    next_state = [
        bytearray([OUT]) * vocab_size,
        bytearray([IN]) * vocab_size,
        bytearray([IN]) * vocab_size,
    ]
    crosses = [bytearray(vocab_size) for _ in range(3)]
    closing = [numpy.zeros(vocab_size, dtype=bool) for _ in range(2)]
    for i, text in enumerate(texts):
        if not text:
            next_state[ESC][i] = ESC
        elif '"' in text or "\\" in text:
            for start in (OUT, IN, ESC):
                end, crossed, closed = _lex(text, start)
                next_state[start][i], crosses[start][i] = end, crossed
                if start != OUT:
                    closing[start - 1][i] = closed
    token_bytes = tuple(partial.get(i) or text.encode() for i, text in enumerate(texts))
    byte_tokens = [-1] * 256
    for i, piece in enumerate(token_bytes[:vocab_size]):
        if len(piece) == 1 and allowed[i] and byte_tokens[piece[0]] < 0:
            byte_tokens[piece[0]] = i
    return TokenTables(
        allowed_bits=_pack_bits(allowed),
        stop_bits=_pack_bits(stop),
        after_ed_bits=_pack_bits(after_ed),
        after_backslash_bits=_pack_bits(after_backslash),
        closing_bits=(_pack_bits(closing[0]), _pack_bits(closing[1])),
        next_state=(bytes(next_state[0]), bytes(next_state[1]), bytes(next_state[2])),
        crosses_quote=(bytes(crosses[0]), bytes(crosses[1]), bytes(crosses[2])),
        ends_with_ed=frozenset(i for i, piece in partial.items() if piece.endswith(b"\xed")),
        token_bytes=token_bytes,
        byte_tokens=tuple(byte_tokens),
        stop_ids=frozenset(int(i) for i in numpy.nonzero(stop)[0]),
    )


def _lex(text: str, state: int) -> tuple[int, bool, bool]:
    """Run ``text`` through the string states from ``state``: (end state, passed a quote, closed a string)."""
    crossed = closed = False
    for ch in text:
        if state == ESC:
            state = IN
        elif ch == '"':
            closed = closed or state == IN
            state = OUT if state == IN else IN
            crossed = True
        elif ch == "\\" and state == IN:
            state = ESC
    return state, crossed, closed


def _token_texts(info: xgr.TokenizerInfo, tokenizer: Any) -> tuple[list[str], dict[int, bytes]]:
    """Each token's text (special tokens: ``""``), and the bytes of the tokens that are not valid UTF-8.

    Texts only need to be exact for ASCII (control characters, ``"``, ``\\``, ``u``). A fast
    tokenizer decodes each token after a one-letter anchor (so a SentencePiece decoder keeps
    the token's leading space), bytes that are not valid UTF-8 show as U+FFFD, and only
    those few tokens are read from xgrammar's vocabulary: several times faster than reading
    ``info.decoded_vocab`` whole, which is the fallback.
    """
    special = set(info.special_token_ids)
    texts = _fast_token_texts(info, tokenizer)
    if texts is not None:
        handle: Any = info._handle  # reads single entries of xgrammar's vocabulary (no public API)
        vocab = handle.decoded_vocab()
        partial = {
            i: bytes(vocab[i]) for i, text in enumerate(texts) if "\ufffd" in text and i not in special
        }
    else:
        pieces: list[bytes] = info.decoded_vocab
        texts = [piece.decode("utf-8", errors="replace") for piece in pieces]
        partial = dict(enumerate(pieces))
    texts += [""] * (info.vocab_size - len(texts))
    for i in special:
        texts[i] = ""
    return texts, {i: p for i, p in partial.items() if p and i not in special and not _is_utf8(p)}


def _fast_token_texts(info: xgr.TokenizerInfo, tokenizer: Any) -> list[str] | None:
    """Token texts from a fast tokenizer's own decoder, or None when that is not possible."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or not callable(getattr(getattr(info, "_handle", None), "decoded_vocab", None)):
        return None
    anchor_ids = backend.encode("a", add_special_tokens=False).ids
    anchor = backend.decode(anchor_ids)
    if len(anchor_ids) != 1 or not anchor:
        return None
    n = min(int(backend.get_vocab_size(with_added_tokens=True)), info.vocab_size)
    pairs: list[str] = backend.decode_batch([[anchor_ids[0], i] for i in range(n)], skip_special_tokens=False)
    if not all(text.startswith(anchor) for text in pairs):
        return None
    return [text[len(anchor) :] for text in pairs]


def _is_utf8(piece: bytes) -> bool:
    try:
        piece.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _has_surrogate(piece: bytes) -> bool:
    """Whether ``piece`` holds a UTF-8 surrogate (``ED A0..BF``)."""
    return _SURROGATE.search(piece) is not None


_SURROGATE = re.compile(b"\\xed[\\xa0-\\xbf]")


def _pack_bits(flags: numpy.ndarray[Any, Any]) -> torch.Tensor:
    """Pack ``[V]`` bools as xgrammar: ``[ceil(V / 32)]`` int32, token i is bit i % 32 of word i // 32."""
    words = -(-flags.shape[0] // 32)
    padded = numpy.zeros(words * 32, dtype=bool)
    padded[: flags.shape[0]] = flags
    packed = numpy.packbits(padded, bitorder="little").view("<u4").astype(numpy.uint32)
    return torch.from_numpy(packed.view(numpy.int32).copy())
