"""From generated tokens to text: decoding, stop sequences, and stable streaming deltas."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from llmrun.generation import cut_at_stop

__all__ = ["TextDeltas", "stop_sequence_hit", "unstable_token_ids"]

Decode = Callable[[Sequence[int]], str]


def unstable_token_ids(tokenizer: Any) -> frozenset[int]:
    """Ids whose text can still change with the next token: byte-fallback pieces (``<0xE4>``),
    decoded as a group, and special tokens, which are skipped inside such a group."""
    ids = {i for tok, i in tokenizer.get_vocab().items() if len(tok) == 6 and tok.startswith("<0x")}
    return frozenset(ids | set(tokenizer.all_special_ids))


def stop_sequence_hit(decode: Decode, tokens: Sequence[int], stop: Sequence[str]) -> bool:
    """Whether the text of the last few ``tokens`` holds one of the ``stop`` sequences."""
    window = max(len(s) for s in stop) + 4  # a token is at least one character, and some slack for merges
    tail = decode(tokens[-window:])
    return any(s in tail for s in stop)


class TextDeltas:
    """Turns a growing token list into text deltas that join to the final text.

    Text is held back while it may still change: trailing byte-fallback pieces, an incomplete
    multi-byte character, or a possible start of a stop sequence.
    """

    def __init__(self, decode: Decode, stop: Sequence[str], unstable_ids: frozenset[int]) -> None:
        self._decode = decode
        self._stop = tuple(stop)
        self._unstable = unstable_ids
        self._hold = max((len(s) for s in self._stop), default=1) - 1
        self.sent = 0  # characters handed out so far

    def take(self, tokens: Sequence[int], final: bool = False) -> str:
        """The text of ``tokens`` not handed out yet and stable (``final``: all of it)."""
        if final:
            text = cut_at_stop(self._decode(tokens), self._stop)
            piece, self.sent = text[self.sent :], max(self.sent, len(text))
            return piece
        stable = len(tokens)
        while stable and tokens[stable - 1] in self._unstable:
            stable -= 1
        text = cut_at_stop(self._decode(tokens[:stable]), self._stop)
        if text.endswith("\ufffd"):  # an incomplete multi-byte character: wait for its next token
            return ""
        safe = len(text) - self._hold
        if safe <= self.sent:
            return ""
        piece, self.sent = text[self.sent : safe], safe
        return piece
