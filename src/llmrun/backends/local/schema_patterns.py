r"""String patterns for the bounded grammar: anchoring, capping repeats, and their worst-case size.

JSON Schema matches a ``pattern`` anywhere in the string; the grammar matches whole strings,
so :func:`anchor_pattern` writes unanchored ends as ``.*``. :func:`bound_pattern` caps the
unbounded repeats (``*``, ``+``, ``{n,}``) so the pattern matches at most a given number of
characters, :func:`pattern_width` says how many characters it can match (``re``'s own
parser is the oracle), and :func:`char_bytes` how many bytes one of its characters can take
in JSON (1 for printable ASCII, 2 for ``"`` and ``\\``, 4 for anything else), so a pattern's
string costs at most ``2 + char_bytes * width`` tokens.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable, Iterator
from typing import Any

from llmrun.errors import UnsupportedFeatureError

__all__ = ["anchor_pattern", "bound_pattern", "cap_repeats", "char_bytes", "pattern_width", "where"]


def anchor_pattern(pattern: str, max_length: int | None = None) -> str:
    """``pattern`` (matched anywhere, as JSON Schema says) as a whole-string pattern for the grammar.

    With ``max_length`` (the string's ``maxLength``), unanchored ends are left unpadded when the
    padding would leave the body no room (``[0-9]{10}`` with ``maxLength: 10`` is the ten digits
    alone); the bounds (:mod:`~llmrun.backends.local.schema_bounds`) cap the rest. Control
    characters written raw (a NUL in ``[^\\x00]``) are written as ``\\xNN`` escapes.
    """
    pattern = json_text_pattern(_CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", pattern))
    if _top_level_alternation(pattern):
        return pattern  # the grammar matches one alternative whole: a subset of what the pattern allows
    at, inner = _anchors(pattern)
    if inner:  # `^(a$|b)`: the engine ignores anchors inside, so `.*` padding would pass `a` + anything.
        # The pattern without anchors, matched whole: a subset in the usual forms (validation checks the rest)
        return "^" + "".join(c for i, c in enumerate(pattern) if i not in at) + "$"
    starts = pattern.startswith("^")
    ends = pattern.endswith("$") and not pattern.endswith("\\$")
    body = pattern[1 if starts else 0 : len(pattern) - 1 if ends else None]
    padded = _least_edges(body, head=not starts, tail=not ends)
    anchored = "^" + ("" if starts else ".*") + padded + ("" if ends else ".*") + "$"
    whole = "^" + body + "$"  # a subset: the body alone, no padding
    if max_length is None or whole == anchored:
        return anchored
    try:  # the padding, at its shortest, would not leave room for the body: without it
        if (
            pattern_width(cap_repeats(anchored, 0), ())
            > max_length
            >= pattern_width(cap_repeats(whole, 0), ())
        ):
            return whole
    except UnsupportedFeatureError:
        pass
    return anchored


_QUANTIFIER = re.compile(r"(?:\{(\d+)(?:,\d*)?\}|([*+?]))[?+]?")
_ESCAPE = re.compile(r"\\(?:x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|[pP]\{[^}]*\}|.)", re.DOTALL)


def _least_edges(body: str, *, head: bool, tail: bool) -> str:
    """``body`` with a repeat at an end that ``.*`` pads taken at its least: the same strings match.

    Matched anywhere, ``X{1,255}`` at an open end means no more than ``X``; the grammar engine
    masks a padded wide repeat very slowly (0.7 s a token for a ``patternProperties`` key).
    """
    atoms = _atoms(body)
    if atoms is None or not atoms:
        return body
    for index in ([0] if head else []) + ([len(atoms) - 1] if tail else []):
        atom, quantifier = atoms[index]
        found = _QUANTIFIER.fullmatch(quantifier)
        if found:
            least = int(found.group(1)) if found.group(1) else int(found.group(2) == "+")
            atoms[index] = (atom if least else "", "" if least <= 1 else f"{{{least}}}")
    return "".join(atom + quantifier for atom, quantifier in atoms)


def _atoms(body: str) -> list[tuple[str, str]] | None:
    """``body``'s top-level atoms with their quantifiers, or None where it is not a plain sequence."""
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(body):
        end = _atom_end(body, i)
        if end is None:
            return None
        found = _QUANTIFIER.match(body, end)
        stop = found.end() if found else end
        out.append((body[i:end], body[end:stop]))
        i = stop
    return out


def _atom_end(body: str, i: int) -> int | None:
    c = body[i]
    if c == "\\":
        found = _ESCAPE.match(body, i)
        return found.end() if found else None
    if c == "[":
        j = i + 1 + (body[i + 1 : i + 2] == "^")
        j += body[j : j + 1] == "]"  # a leading ] is a character
        while j < len(body) and body[j] != "]":
            j += 2 if body[j] == "\\" else 1
        return j + 1 if j < len(body) else None
    if c == "(":
        depth, j = 0, i
        while j < len(body):
            if body[j] in "[\\":
                nxt = _atom_end(body, j)
                if nxt is None:
                    return None
                j = nxt
                continue
            depth += (body[j] == "(") - (body[j] == ")")
            j += 1
            if depth == 0:
                return j
        return None
    return None if c in "|)*+?{^$" else i + 1


_BACKSLASH, _QUOTE = "\\\\\\\\", '\\\\"'  # the regexes of a JSON-escaped backslash and quote
_CLASS_ITEM = re.compile(r"\\u[0-9a-fA-F]{4}|\\x[0-9a-fA-F]{2}|\\.|.", re.DOTALL)


def json_text_pattern(pattern: str) -> str:
    """``pattern`` as the grammar engine reads it: against the JSON text of the string, escapes included.

    xgrammar matches a string's ``pattern`` against its JSON text, so a literal backslash or
    quote in the pattern would let it write one raw (invalid JSON): they are written as the
    regexes of their escapes (``\\\\`` for a backslash, ``\\"`` for a quote). Negated classes and
    ``.`` never give them (the engine leaves escapes out there, a tightening).
    """
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "[":
            j = _class_end(pattern, i)
            out.append(_json_class(pattern[i : j + 1]))
            i = j + 1
            continue
        item = _CLASS_ITEM.match(pattern, i)
        token = item.group() if item else c
        out.append(_escaped(token) or _SPACE.get(token, token))
        i += len(token)
    return "".join(out)


#: ``\s`` as a space: xgrammar's ``\s`` also takes U+FEFF, which Python's (the validator's) does
#: not, nor the reply tracker's automaton (a tightening; a negated class keeps its ``\s``).
_SPACE = {"\\s": " "}


def _escaped(token: str) -> str | None:
    """The JSON-escape regex of a backslash or quote ``token``; None for other tokens."""
    if token in ("\\\\", "\\x5c", "\\x5C", "\\u005c", "\\u005C"):
        return _BACKSLASH
    if token in ('"', '\\"', "\\x22", "\\u0022"):
        return _QUOTE
    return None


def _class_end(pattern: str, start: int) -> int:
    j = start + 1
    if j < len(pattern) and pattern[j] == "^":
        j += 1
    if j < len(pattern) and pattern[j] == "]":
        j += 1
    while j < len(pattern) and pattern[j] != "]":
        j += 2 if pattern[j] == "\\" else 1
    return j


def _json_class(cls: str) -> str:
    """A class with a literal backslash or quote as an alternation of the rest and their escapes."""
    if cls.startswith("[^") or not cls.endswith("]"):
        return cls
    items = [_SPACE.get(token, token) for token in _CLASS_ITEM.findall(cls[1:-1])]
    kept, escapes = [], []
    for k, token in enumerate(items):
        escape = _escaped(token)
        if escape is None:
            kept.append(token)
        elif "-" in (items[k - 1] if k else "", items[k + 1] if k + 1 < len(items) else ""):
            return cls  # part of a range: left as it is (the engine may refuse it)
        elif escape not in escapes:
            escapes.append(escape)
    if not escapes:
        return f"[{''.join(kept)}]"
    return "(?:" + "|".join(([f"[{''.join(kept)}]"] if kept else []) + escapes) + ")"


_CONTROL = re.compile(r"(?<!\\)[\x00-\x1f]")


def _syntax(pattern: str) -> Iterator[tuple[int, str, int]]:
    """(index, character, group depth) of each unescaped character outside a character class."""
    depth, i, in_class = 0, 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
        else:
            depth += c == "("
            depth -= c == ")"
            yield i, c, depth
        i += 1


def _top_level_alternation(pattern: str) -> bool:
    return any(c == "|" and depth == 0 for _, c, depth in _syntax(pattern))


def _anchors(pattern: str) -> tuple[set[int], bool]:
    """Where ``pattern``'s anchors are, and whether one is inside it (not a leading ``^``/trailing ``$``)."""
    at = {i for i, c, _ in _syntax(pattern) if c in "^$"}
    ends = {0} if pattern.startswith("^") else set()
    if pattern.endswith("$") and len(pattern) - 1 in at:
        ends.add(len(pattern) - 1)
    return at, bool(at - ends)


_UNBOUNDED_REPEAT = re.compile(r"\{(\d+),\}")


def bound_pattern(pattern: str, chars: int, path: tuple[str, ...]) -> str:
    """Cap the unbounded repeats of ``pattern`` so it matches at most ``chars`` characters when possible."""

    def capped(k: int) -> str:
        return cap_repeats(pattern, k)

    if pattern_width(capped(0), path) > chars:
        return capped(0)
    lo, hi = 0, max(chars, 1)  # invariant: capped(lo) fits
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if pattern_width(capped(mid), path) <= chars:
            lo = mid
        else:
            hi = mid - 1
    return capped(lo)


def cap_repeats(pattern: str, k: int) -> str:
    """Rewrite ``*``, ``+`` and ``{n,}`` outside character classes as repeats of at most ``max(k, n)``.

    An optional ``?`` is written ``{0,1}`` (the same, and xgrammar reads it right after a group).
    """
    out: list[str] = []
    i, n = 0, len(pattern)
    after_atom = False  # a quantifier here applies to an atom (not possessive/lazy after one)
    while i < n:
        c = pattern[i]
        if c == "\\":
            out.append(pattern[i : i + 2])
            i += 2
            after_atom = True
            continue
        if c == "[":
            j = i + 1
            if j < n and pattern[j] == "^":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 2 if pattern[j] == "\\" else 1
            out.append(pattern[i : j + 1])
            i = j + 1
            after_atom = True
            continue
        if c in "*+" and after_atom:
            out.append(f"{{{0 if c == '*' else 1},{max(k, 1)}}}")
            i += 1
            after_atom = False
            continue
        if (
            c == "?" and after_atom
        ):  # xgrammar 0.2 mis-reads "(?:xy{1,3})?" (it accepts "y"); {0,1} is the same
            out.append("{0,1}")
            i += 1
            after_atom = False
            continue
        m = _UNBOUNDED_REPEAT.match(pattern, i)
        if m and after_atom:
            low = int(m.group(1))
            out.append(f"{{{low},{max(k, low)}}}")
            i = m.end()
            after_atom = False
            continue
        out.append(c)
        i += 1
        # after "(", "|", "^" or a "?" (a quantifier, or group syntax) nothing can be repeated
        after_atom = c not in "(|^?"
        if c == "{":  # a bounded repeat {n} / {n,m}: copy it whole
            end = pattern.find("}", i)
            if end != -1 and re.fullmatch(r"\d*,?\d*", pattern[i:end]):
                out.append(pattern[i : end + 1])
                i = end + 1
                after_atom = False
    return "".join(out)


def pattern_width(pattern: str, path: tuple[str, ...]) -> int:
    """The most characters ``pattern`` can match; raises when it is unbounded or invalid."""
    # re._parser is private but present in 3.11+ (sre_parse before): the exact width oracle.
    sre_parse: Any = importlib.import_module("re._parser")
    try:
        width = int(sre_parse.parse(pattern).getwidth()[1])
    except (re.error, OverflowError) as exc:
        raise UnsupportedFeatureError(f"{where(path)} has a pattern that cannot be parsed: {exc}") from exc
    if width >= int(sre_parse.MAXREPEAT):
        raise UnsupportedFeatureError(
            f"{where(path)} has a pattern {pattern!r} whose length cannot be bounded; "
            "write it with bounded repeats such as {1,20}"
        )
    return width


def char_bytes(pattern: str) -> int:
    """The most bytes one character matched by ``pattern`` can take in a JSON string (see above)."""
    sre_parse: Any = importlib.import_module("re._parser")
    try:
        tree = sre_parse.parse(pattern)
    except re.error:
        return 4
    return _max_bytes(tree.data if hasattr(tree, "data") else list(tree))


def _max_bytes(items: Any) -> int:
    names: Any = importlib.import_module("re._constants")
    worst = 1
    for op, arg in items:
        if op is names.LITERAL:
            worst = max(worst, _code_bytes(arg))
        elif op is names.RANGE:
            worst = max(worst, _code_bytes(arg[0]), _code_bytes(arg[1]))
        elif op is names.IN:
            worst = max(worst, _max_bytes(arg))
        elif op in (names.SUBPATTERN,):
            worst = max(worst, _max_bytes(arg[-1]))
        elif op in (names.MAX_REPEAT, names.MIN_REPEAT, names.POSSESSIVE_REPEAT):
            worst = max(worst, _max_bytes(arg[2]))
        elif op is names.BRANCH:
            worst = max([worst, *(_max_bytes(branch) for branch in arg[1])])
        elif op is names.AT:
            continue
        else:  # ANY, NOT_LITERAL, CATEGORY, a negated class, lookarounds: anything may come
            return 4
    return worst


def _code_bytes(code: int) -> int:
    if code in (0x22, 0x5C):
        return 2
    if code < 0x20:
        return 6
    return 1 if code < 0x80 else 4


def where(path: Iterable[str]) -> str:
    """How an error names the field at ``path``."""
    parts = [p for p in path if not p.startswith(("anyOf", "oneOf", "allOf"))]
    return f"field {'.'.join(parts)!r}" if parts else "the output type"
