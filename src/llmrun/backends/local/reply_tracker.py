"""Follow a typed reply through its schema, token by token, and know what closing it costs.

One :class:`ReplyTracker` per row is fed the bytes of each chosen token. It keeps a
small stack of frames (the open objects, arrays and strings, with the current key,
the properties written, the items written, ...) over the tree that
:func:`~llmrun.backends.local.reply_plan.plan_reply` built, and :meth:`ReplyTracker.cost`
is the number of tokens (one per byte: an upper bound for any tokenizer) of the
shortest valid way to close the JSON from here: finish the current character, close
the string, write the required properties still to come and ``minItems`` at their
smallest values, close the brackets. A bounded value (a number, an enum, a pattern
string ...) costs the rest of its smallest value while the reply follows it, else the
rest of its static worst case in tokens.

:class:`~llmrun.backends.local.grammar.JsonSchemaConstraint` keeps ``cost() <= tokens
left`` after every token: a token that breaks it is replaced by the model's best
allowed token that keeps it, else by one byte that does. Such a byte always exists:
the first byte of the closing route lowers the cost by one. The tracker only reads
the bytes; xgrammar's grammar decides what is allowed, and the two agree on the
schema's structure (the tracker is built from the same normalized schema). Where they
disagree (xgrammar's ``\\s`` takes U+FEFF, the pattern automaton's does not), a token
would leave the tracker :attr:`~ReplyTracker.lost`; its cost is then :data:`LOST`, so the
constraint does not take it and picks one the tracker can follow (the closing's next byte
always is one): the reply stays within the budget.
"""

from __future__ import annotations

from typing import Any

from llmrun.backends.local.reply_patterns import ESCAPES
from llmrun.backends.local.reply_plan import ARR, MUL, OBJ, PAT, STR, UNI, Node

#: The cost of a reply the tracker cannot follow: more than any budget, so no token leads there.
LOST = 1 << 40

__all__ = ["ReplyTracker"]

# frame kinds (first field of each frame tuple)
_ROOT, _OBJ, _ARR, _STR, _OPQ, _PAT, _MUL = range(7)
# object phases
_O_START, _O_KEY, _O_COLON, _O_VALUE, _O_CHILD, _O_AFTER, _O_COMMA = range(7)
# array phases
_A_START, _A_CHILD, _A_AFTER, _A_COMMA = range(4)
# root phases
_R_PENDING, _R_CHILD, _R_DONE = range(3)
#: ``cur`` of an object frame writing a free key.
_FREE = -2
_QUOTE, _BACKSLASH, _COLON, _COMMA = 0x22, 0x5C, 0x3A, 0x2C
_LBRACE, _RBRACE, _LBRACKET, _RBRACKET = 0x7B, 0x7D, 0x5B, 0x5D
_SCALAR_END = frozenset(b",]} \t\n\r")
_INF = 1 << 30


def _utf8_pending(lead: int) -> int:
    """Continuation bytes a UTF-8 lead byte needs."""
    return 0 if lead < 0xC0 else 1 if lead < 0xE0 else 2 if lead < 0xF0 else 3


class ReplyTracker:
    """Where one row's reply is in its schema, and the tokens its shortest valid closing takes.

    Frames are tuples (``stack[-1]`` is replaced, never changed), so a snapshot is a copy of
    the list: :meth:`snapshot` / :meth:`restore` let the constraint try a token and undo it.
    """

    __slots__ = ("lost", "stack", "step")

    def __init__(self, root: Node) -> None:
        self.stack: list[tuple[Any, ...]] = [(_ROOT, root, _R_PENDING)]
        self.lost = False  # the bytes left the schema the tracker knows (cost() is then LOST)
        self.step = 0  # tokens fed

    def snapshot(self) -> tuple[list[tuple[Any, ...]], bool, int]:
        return self.stack.copy(), self.lost, self.step

    def restore(self, snap: tuple[list[tuple[Any, ...]], bool, int]) -> None:
        self.stack, self.lost, self.step = snap[0].copy(), snap[1], snap[2]

    def string_cap(self) -> int | None:
        """Inside a bounded value: its share (the most tokens one of its strings may take); else None."""
        return _cap_of(self.stack[-1])

    def hint(self) -> int | None:
        """The next byte of the cheapest closing, where it is cheap to know (in a pattern string)."""
        frame = self.stack[-1]
        if frame[0] != _PAT or frame[3] or frame[4]:
            return None
        return int(frame[1].automaton.hint.get(frame[2], b'"')[0])

    def feed(self, data: bytes) -> None:
        """Take one token's bytes."""
        self.step += 1
        for b in data:
            if self.lost:
                return
            self._byte(b)

    def cost(self) -> int:
        """Tokens of the shortest valid closing from here (0 when complete, :data:`LOST` when lost)."""
        if self.lost:
            return LOST
        total = 0
        for frame in self.stack:
            total += _FRAME_COST[frame[0]](frame)
        return total

    # ------------------------------------------------------------------ bytes
    def _byte(self, b: int) -> None:
        stack = self.stack
        while True:
            frame = stack[-1]
            kind = frame[0]
            if kind == _STR:
                _, node, chars, esc, pend = frame
                if pend:
                    stack[-1] = (_STR, node, chars, esc, pend - 1)
                elif esc:
                    stack[-1] = (_STR, node, chars, False, 0)
                elif b == _QUOTE:
                    self._close()
                elif b == _BACKSLASH:
                    stack[-1] = (_STR, node, chars + 1, True, 0)
                else:
                    stack[-1] = (_STR, node, chars + 1, False, _utf8_pending(b))
                return
            if kind == _PAT:
                self._pattern_byte(frame, b)
                return
            if kind == _MUL:
                self._together_byte(frame, b)
                return
            if kind == _OPQ:
                if not self._bounded_byte(frame, b):
                    continue  # a scalar ended before this byte: the byte is its parent's
                return
            if kind == _OBJ:
                self._object_byte(frame, b)
            elif kind == _ARR:
                self._array_byte(frame, b)
            else:  # root
                if frame[2] != _R_PENDING:
                    self.lost = True
                    return
                stack[-1] = (_ROOT, frame[1], _R_CHILD)
                self._start(frame[1], b)
            return

    def _start(self, node: Node | None, b: int) -> None:
        """A value of ``node`` starts with byte ``b``: push its frame."""
        while node is not None and node.kind == UNI:
            node = node.by_byte.get(b)
        if node is None or b not in node.first:
            self.lost = True
            return
        kind = node.kind
        if kind == OBJ:
            self.stack.append((_OBJ, node, _O_START, -1, -1, b"", False, False, 0))
        elif kind == ARR:
            self.stack.append((_ARR, node, _A_START, 0))
        elif kind == STR:
            self.stack.append((_STR, node, 0, False, 0))
        elif kind == MUL:
            alts = tuple((_ROOT, alt, _R_PENDING) for alt in node.alts)
            self.stack.append((_MUL, node, tuple((alt,) for alt in alts)))
            self._together_byte(self.stack[-1], b)
        elif kind == PAT:
            assert node.automaton is not None
            self.stack.append((_PAT, node, node.automaton.initial, False, b""))
        else:
            self.stack.append((_OPQ, node, 0, 0, True, 0, 0, False, False, -1))
            self._bounded_byte(self.stack[-1], b)

    def _close(self) -> None:
        """The top value is complete: pop it and move its parent past it."""
        stack = self.stack
        stack.pop()
        parent = stack[-1]
        kind = parent[0]
        if kind == _OBJ:
            _, node, _, pos, cur, _, _, _, _ = parent
            pos = cur if cur >= 0 else len(node.props) - 1
            stack[-1] = (_OBJ, node, _O_AFTER, pos, cur, b"", True, False, 0)
        elif kind == _ARR:
            stack[-1] = (_ARR, parent[1], _A_AFTER, parent[3] + 1)
        else:
            stack[-1] = (_ROOT, parent[1], _R_DONE)

    def _object_byte(self, frame: tuple[Any, ...], b: int) -> None:
        _, node, phase, pos, cur, key, wrote, kesc, kpend = frame
        stack = self.stack
        if phase == _O_KEY:
            key += bytes((b,))
            if kpend:
                stack[-1] = (_OBJ, node, phase, pos, cur, key, wrote, False, kpend - 1)
            elif kesc:
                stack[-1] = (_OBJ, node, phase, pos, cur, key, wrote, False, 0)
            elif b == _BACKSLASH:
                stack[-1] = (_OBJ, node, phase, pos, cur, key, wrote, True, 0)
            elif b == _QUOTE:
                index = node.names.get(key)
                if index is not None and index in node.allowed(pos):
                    cur = index
                elif (
                    node.free_allowed(pos)
                    and index is None
                    and (node.key_automaton is None or _key_end(node, key[:-1]) == 0)
                ):
                    cur = _FREE
                else:
                    self.lost = True
                    return
                stack[-1] = (_OBJ, node, _O_COLON, pos, cur, b"", wrote, False, 0)
            else:
                stack[-1] = (_OBJ, node, phase, pos, cur, key, wrote, False, _utf8_pending(b))
        elif phase == _O_VALUE:
            stack[-1] = (_OBJ, node, _O_CHILD, pos, cur, b"", wrote, False, 0)
            self._start(node.props[cur][1] if cur >= 0 else node.free, b)
        elif phase == _O_COLON and b == _COLON:
            stack[-1] = (_OBJ, node, _O_VALUE, pos, cur, b"", wrote, False, 0)
        elif b == _QUOTE and phase in (_O_START, _O_COMMA):
            stack[-1] = (_OBJ, node, _O_KEY, pos, cur, b'"', wrote, False, 0)
        elif b == _RBRACE and phase in (_O_AFTER, _O_START):
            self._close()
        elif b == _COMMA and phase == _O_AFTER:
            stack[-1] = (_OBJ, node, _O_COMMA, pos, cur, b"", wrote, False, 0)
        else:
            self.lost = True

    def _array_byte(self, frame: tuple[Any, ...], b: int) -> None:
        _, node, phase, count = frame
        if b == _RBRACKET and phase in (_A_AFTER, _A_START):
            self._close()
        elif phase == _A_AFTER and b == _COMMA:
            self.stack[-1] = (_ARR, node, _A_COMMA, count)
        elif phase in (_A_START, _A_COMMA):
            self.stack[-1] = (_ARR, node, _A_CHILD, count)
            self._start(node.item(count), b)
        else:
            self.lost = True

    def _together_byte(self, frame: tuple[Any, ...], b: int) -> None:
        """A byte of a value whose alternatives start alike: each still possible one follows it."""
        alive, done = [], False
        for stack in frame[2]:
            sub = ReplyTracker.__new__(ReplyTracker)
            sub.stack, sub.lost, sub.step = list(stack), False, self.step
            sub._byte(b)
            if not sub.lost:
                alive.append(tuple(sub.stack))
                done = done or (len(sub.stack) == 1 and sub.stack[0][2] == _R_DONE)
        if not alive:
            self.lost = True
        elif done:
            self._close()
        else:
            self.stack[-1] = (_MUL, frame[1], tuple(alive))

    def _pattern_byte(self, frame: tuple[Any, ...], b: int) -> None:
        """A byte of a pattern string: JSON escapes and UTF-8 decoded, characters fed to the automaton."""
        _, node, state, esc, partial = frame
        automaton = node.automaton
        char = None
        if partial:
            partial += bytes((b,))
            if len(partial) > _utf8_pending(partial[0]):
                char = partial.decode("utf-8", errors="replace")[:1]
                partial = b""
        elif esc:
            char, esc = ESCAPES.get(b, "?"), False
        elif b == _BACKSLASH:
            esc = True
        elif b == _QUOTE:
            if state not in automaton.finals:
                self.lost = True
                return
            self._close()
            return
        elif b >= 0xC0:
            partial = bytes((b,))
        else:
            char = chr(b)
        if char is not None:
            nxt = automaton.step(state, char)
            if nxt is None or nxt not in automaton.cost:
                self.lost = True
                return
            state = nxt
        self.stack[-1] = (_PAT, node, state, esc, partial)

    def _bounded_byte(self, frame: tuple[Any, ...], b: int) -> bool:
        """Feed ``b`` to a bounded value; False when it is a scalar that ended before ``b``."""
        _, node, written, tokens, follows, mode, depth, instr, esc, last = frame
        if mode == 3 and b in _SCALAR_END:
            self._close()
            return False
        if last != self.step:
            tokens, last = tokens + 1, self.step
        text = node.min_text
        follows = follows and text is not None and written < len(text) and text[written] == b
        written += 1
        done = False
        if mode == 0:
            mode = 1 if b == _QUOTE else 2 if b in (_LBRACE, _LBRACKET) else 3
            depth, instr = (1, False) if mode == 2 else (0, mode == 1)
        elif instr:
            if esc:
                esc = False
            elif b == _BACKSLASH:
                esc = True
            elif b == _QUOTE:
                instr = False
                done = mode == 1
        elif mode == 2:
            if b == _QUOTE:
                instr = True
            elif b in (_LBRACE, _LBRACKET):
                depth += 1
            elif b in (_RBRACE, _RBRACKET):
                depth -= 1
                done = depth == 0
        if done:
            self._close()
        else:
            self.stack[-1] = (_OPQ, node, written, tokens, follows, mode, depth, instr, esc, last)
        return True


# ---------------------------------------------------------------------- costs


def _cap_of(frame: tuple[Any, ...]) -> int | None:
    """A bounded value's share; for alternatives followed together, the smallest of theirs."""
    if frame[0] == _MUL:  # no cap while one alternative is not in a capped value: it may go on
        caps = [_cap_of(stack[-1]) for stack in frame[2]]
        return None if None in caps else min(c for c in caps if c is not None)
    share = frame[1].share if frame[0] == _OPQ else None
    return None if share is None else int(share)


def _root_cost(frame: tuple[Any, ...]) -> int:
    return int(frame[1].min_cost) if frame[2] == _R_PENDING else 0


def _after(node: Node, cur: int) -> int:
    """Closing an object once the property ``cur`` is written."""
    return node.object_tail(cur if cur >= 0 else len(node.props) - 1, False)


def _value_of(node: Node, cur: int) -> Node:
    value = node.props[cur][1] if cur >= 0 else node.free
    assert value is not None
    return value


def _object_cost(frame: tuple[Any, ...]) -> int:
    _, node, phase, pos, cur, key, _, kesc, kpend = frame
    if phase == _O_CHILD:
        return _after(node, cur)
    if phase == _O_AFTER:
        return int(node.object_tail(pos, False))
    if phase == _O_VALUE:
        return _value_of(node, cur).min_cost + _after(node, cur)
    if phase == _O_COLON:
        return 1 + _value_of(node, cur).min_cost + _after(node, cur)
    if phase == _O_START:
        return int(node.object_tail(-1, True))
    if phase == _O_COMMA:
        return int(node.comma_cost[pos + 1])
    best = _INF  # in a key: finish a named key it starts, or close it as a free key
    props = node.props
    for q in node.allowed(pos):
        literal = props[q][0]
        if literal.startswith(key):
            best = min(best, len(literal) - len(key) + 1 + props[q][1].min_cost + node.object_tail(q, False))
    if node.free_allowed(pos):
        assert node.free is not None
        end = kpend + kesc if node.key_automaton is None else _key_end(node, key)
        if end is not None and not kpend and not kesc and key + b'"' in node.names:
            end = None if node.key_automaton is not None else 1  # a named key's name: one more character
        if end is not None:
            best = min(best, end + 2 + node.free.min_cost + node.object_tail(len(props) - 1, False))
    return best


def _key_end(node: Node, key: bytes) -> int | None:
    """Bytes to finish a free key's content (``key``: its bytes so far, opening quote included);
    None when it cannot be a free key."""
    automaton = node.key_automaton
    pend, esc, i = 0, False, 1
    state = None if automaton is None else automaton.initial
    while i < len(key):
        b, char = key[i], None
        if esc:
            char, esc = ESCAPES.get(b, "?"), False
            i += 1
        elif b == _BACKSLASH:
            esc, i = True, i + 1
        else:
            size = _utf8_pending(b) + 1
            if i + size > len(key):
                pend, i = i + size - len(key), len(key)
            else:
                char = key[i : i + size].decode("utf-8", errors="replace")[:1]
                i += size
        if char is not None and automaton is not None and state is not None:
            state = automaton.step(state, char)
            if state is None or state not in automaton.cost:
                return None
    if automaton is None or state is None:
        return pend + esc
    if pend or esc:
        return pend + esc + int(automaton.worst_next.get(state, 0))
    return int(automaton.cost[state])


def _array_cost(frame: tuple[Any, ...]) -> int:
    _, node, phase, count = frame
    if phase == _A_CHILD:
        return int(node.array_tail(count + 1))
    if phase == _A_COMMA:
        item = node.item(count)
        return _INF if item is None else item.min_cost + node.array_tail(count + 1)
    return int(node.array_tail(count))


def _string_cost(frame: tuple[Any, ...]) -> int:
    _, node, chars, esc, pend = frame
    return int(pend + esc + max(0, node.min_len - chars) + 1)


def _bounded_cost(frame: tuple[Any, ...]) -> int:
    _, node, written, tokens, follows, *_ = frame
    if follows:
        return int(max(len(node.min_text) - written, 0))
    if tokens > node.width:  # past its worst case (uncapped, beside an alternative that goes on): no way
        return _INF
    return int(node.width - tokens)


def _pattern_cost(frame: tuple[Any, ...]) -> int:
    _, node, state, esc, partial = frame
    automaton = node.automaton
    if esc or partial:  # a character is half-written: its rest, then the dearest state it can lead to
        rest = 1 if esc else _utf8_pending(partial[0]) + 1 - len(partial)
        return rest + int(automaton.worst_next.get(state, 0)) + 1
    return int(automaton.cost[state]) + 1


def _together_cost(frame: tuple[Any, ...]) -> int:
    """The cheapest closing among the alternatives still possible."""
    return min(sum(_FRAME_COST[f[0]](f) for f in stack) for stack in frame[2])


_FRAME_COST = (
    _root_cost,
    _object_cost,
    _array_cost,
    _string_cost,
    _bounded_cost,
    _pattern_cost,
    _together_cost,
)
