"""The automaton of a string ``pattern``, for the reply tracker: where a string is, and its cheapest end.

:func:`pattern_automaton` builds a DFA of a JSON Schema ``pattern`` (anchored by the
normalizer) with `interegular <https://github.com/MegaIng/interegular>`_, and the cost in
bytes of compact JSON (a printable ASCII character is 1, ``"`` and ``\\`` are 2 as
escapes, other characters their UTF-8 length) of the cheapest way from each state to an
accepting one, with the characters that take it. Patterns the library cannot read
(lookarounds, anchors inside, backreferences ...) give ``None``: the string is then one
bounded value with its static width.
"""

from __future__ import annotations

import functools
import heapq
import re
from dataclasses import dataclass
from typing import Any

__all__ = ["PatternAutomaton", "pattern_automaton"]

#: Automata with more states than this are not built (the string stays a bounded value).
MAX_STATES = 4096
_UNSUPPORTED = re.compile(r"\(\?[=!<]|\\[bBAZzG1-9]|\\[pPk]")
#: Characters tried for "any other character", cheapest first.
_OTHER = [chr(c) for c in range(0x20, 0x7F) if chr(c) not in '"\\'] + ["é", "中", "😀"]
#: JSON escapes: the byte after a backslash -> the character.
ESCAPES = {ord('"'): '"', ord("\\"): "\\", ord("/"): "/", ord("b"): "\b", ord("f"): "\f",
           ord("n"): "\n", ord("r"): "\r", ord("t"): "\t"}  # fmt: skip


@dataclass(frozen=True, eq=False)
class PatternAutomaton:
    """A pattern's DFA and, per state, the cheapest way to an accepting state."""

    initial: int
    finals: frozenset[int]
    #: state -> symbol -> next state
    moves: dict[int, dict[Any, int]]
    #: character -> symbol (interegular's alphabet)
    alphabet: Any
    #: state -> bytes of the cheapest completion (no closing quote); absent: no completion
    cost: dict[int, int]
    #: state -> the most ``cost`` among the states one character away (for a half-written character)
    worst_next: dict[int, int]
    #: the cheapest whole match, as JSON string content
    shortest: bytes
    #: state -> the JSON text of the next character on its cheapest completion (absent: end here)
    hint: dict[int, bytes]

    def step(self, state: int, char: str) -> int | None:
        return self.moves.get(state, {}).get(self.alphabet[char])


def _char_bytes(char: str) -> int:
    if char in '"\\':
        return 2
    if ord(char) < 0x20:
        return 2 if char in "\b\f\n\r\t" else 99
    return len(char.encode())


def _json_text(char: str) -> bytes:
    if char in '"\\':
        return b"\\" + char.encode()
    table = {"\b": b"\\b", "\f": b"\\f", "\n": b"\\n", "\r": b"\\r", "\t": b"\\t"}
    return table.get(char) or char.encode()


@functools.lru_cache(maxsize=512)
def pattern_automaton(pattern: str) -> PatternAutomaton | None:
    """The automaton of an anchored ``pattern``, or None where it cannot be built (see the module)."""
    body = pattern[1:] if pattern.startswith("^") else pattern
    if body.endswith("$") and not body.endswith("\\$"):
        body = body[:-1]
    if _UNSUPPORTED.search(body) or "^" in body.replace("[^", "") or re.search(r"(?<!\\)\$", body):
        return None
    try:
        import interegular

        fsm = interegular.parse_pattern(body).to_fsm()
    except Exception:  # interegular raises its own errors on what it cannot read
        return None
    if len(fsm.states) > MAX_STATES:
        return None
    alphabet = fsm.alphabet
    listed = {c for c in alphabet if isinstance(c, str)}
    cheapest: dict[Any, str] = {}  # symbol -> its cheapest character
    for symbol, chars in alphabet.by_transition.items():
        named = [c for c in chars if isinstance(c, str)]
        if len(named) < len(chars):  # "anything else": any character not listed
            named += [c for c in _OTHER if c not in listed][:1]
        usable = [c for c in named if _char_bytes(c) < 99]
        if usable:  # "0" last among equals: a date of year 0000 or a leading zero is often refused
            cheapest[symbol] = min(usable, key=lambda c: (_char_bytes(c), c == "0", c))
    moves: dict[int, dict[Any, int]] = {s: dict(m) for s, m in fsm.map.items()}
    back: dict[int, list[tuple[int, Any]]] = {}
    for state, row in moves.items():
        for symbol, nxt in row.items():
            if symbol in cheapest:
                back.setdefault(nxt, []).append((state, symbol))
    cost: dict[int, int] = {f: 0 for f in fsm.finals}
    via: dict[int, tuple[Any, int]] = {}
    heap: list[tuple[int, int]] = [(0, f) for f in fsm.finals]
    while heap:  # cheapest completion per state, over the reversed moves
        c, state = heapq.heappop(heap)
        if c > cost.get(state, c):
            continue
        for prev, symbol in back.get(state, ()):
            step = c + _char_bytes(cheapest[symbol])
            if step < cost.get(prev, 1 << 30):
                cost[prev] = step
                via[prev] = (symbol, state)
                heapq.heappush(heap, (step, prev))
    if fsm.initial not in cost:
        return None
    text, state = b"", fsm.initial
    while state not in fsm.finals or (state in via and cost[state] > 0):
        if cost[state] == 0:
            break
        symbol, state = via[state]
        text += _json_text(cheapest[symbol])
    worst = {s: max((cost.get(n, 0) for n in row.values()), default=0) for s, row in moves.items()}
    hint = {s: _json_text(cheapest[symbol]) for s, (symbol, _) in via.items() if cost[s] > 0}
    return PatternAutomaton(fsm.initial, frozenset(fsm.finals), moves, alphabet, cost, worst, text, hint)
