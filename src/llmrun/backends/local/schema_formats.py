r"""String ``format`` s as regular expressions the grammar can enforce and the bounds can size.

xgrammar knows several formats natively but writes them with unbounded repeats, which
cannot be sized to a token budget; these patterns say the same with repeats that
:mod:`~llmrun.backends.local.schema_bounds` caps. Each pattern matches only strings that
are valid for the format (sometimes a subset: ``date`` leaves out 29 February, and year 0,
which no calendar has; ``duration`` a few rare spellings), so output is never invalid. A
format not listed here is an annotation only (as JSON Schema says of unknown formats) and
leaves the string free.
"""

from __future__ import annotations

_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_HEX4 = r"[0-9a-fA-F]{1,4}"
_YEAR = r"(?:[1-9][0-9]{3}|0[1-9][0-9]{2}|00[1-9][0-9]|000[1-9])"  # 0001-9999: year 0 is no date
_DATE = (
    _YEAR + r"-(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])"
    r"|(?:0[13-9]|1[0-2])-(?:29|30)|(?:0[13578]|1[02])-31)"
)
_TIME = (
    r"(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,6})?(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
)
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_URI_CHARS = r"[A-Za-z0-9._~%!$&'()*+,;=:@/?#-]"

#: ``format`` -> a pattern matching (a subset of) the strings valid for it, without anchors.
FORMAT_PATTERNS: dict[str, str] = {
    "date": _DATE,
    "time": _TIME,
    "date-time": _DATE + "T" + _TIME,
    "duration": r"P(?:[0-9]+[YMWD]|T[0-9]+[HMS])",
    "email": r"[A-Za-z0-9_%+-]+(?:\.[A-Za-z0-9_%+-]+)*@" + _LABEL + r"(?:\." + _LABEL + ")+",
    "idn-email": r"[A-Za-z0-9_%+-]+@" + _LABEL + r"(?:\." + _LABEL + ")+",
    "hostname": _LABEL + r"(?:\." + _LABEL + ")*",
    "idn-hostname": _LABEL + r"(?:\." + _LABEL + ")*",
    "ipv4": rf"{_OCTET}(?:\.{_OCTET}){{3}}",
    "ipv6": rf"(?:{_HEX4}:){{7}}{_HEX4}|::(?:{_HEX4}:){{0,5}}{_HEX4}|(?:{_HEX4}:){{1,6}}:{_HEX4}",
    "uuid": r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
    "uri": r"[A-Za-z][A-Za-z0-9+.-]*:" + _URI_CHARS + "*",
    "iri": r"[A-Za-z][A-Za-z0-9+.-]*:" + _URI_CHARS + "*",
    "uri-reference": _URI_CHARS + "*",
    "iri-reference": _URI_CHARS + "*",
    "uri-template": _URI_CHARS + "*",
    "json-pointer": r"(?:/(?:[A-Za-z0-9._ -]|~[01])*)*",
    "relative-json-pointer": r"(?:0|[1-9][0-9]*)(?:#|(?:/(?:[A-Za-z0-9._ -]|~[01])*)*)",
    "regex": r"[A-Za-z0-9 _-]*",
}
