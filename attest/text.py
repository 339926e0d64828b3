"""Untrusted text: refuse it at the wire boundary, escape it on every human output.

Agents (and a GPU driver an attacker controls) choose names, UUIDs and versions. A newline in one
forges a line of `fleet` output or of a text log, an ESC or OSC sequence drives the operator's
terminal, a NUL truncates a C string, and a bidirectional override (U+202E) shows text in another
order than it is stored. Two defences, both here so every program uses the same rule:

* `check_text` refuses such characters: the wire decoder calls it for every string of evidence
  (docs/protocol.md §4), so they are never stored;
* `escape` renders any string so that it prints as one inert line: control and format
  characters become `\\n`, `\\x1b`, `\\u202e` escapes, and a backslash is doubled so an escape the
  sender typed cannot pass for one of ours. Every human (non-JSON) output calls it, because the
  store may hold text from before the boundary check, and enrollment, registry and log text does
  not pass through the evidence decoder.

Standard library only: `gpu-attest-agent inventory` runs with nothing else installed.
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache

#: Unicode categories that never belong in a name: controls (Cc: C0, DEL, C1 such as CSI U+009B),
#: format characters (Cf: bidi embeddings and overrides U+202A-U+202E, isolates U+2066-U+2069,
#: zero-width characters, the BOM), line and paragraph separators (Zl, Zp), surrogates (Cs),
#: private use (Co) and unassigned code points (Cn).
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})


@lru_cache(maxsize=4096)
def _unsafe(char: str) -> bool:
    return unicodedata.category(char) in _UNSAFE_CATEGORIES


def unsafe_char(text: str) -> str | None:
    """The first character of `text` that must not appear in untrusted text, or None.

    Printable ASCII, the common case, is decided without a Unicode lookup."""
    if text.isascii() and text.isprintable():
        return None
    for char in text:
        if _unsafe(char):
            return char
    return None


def check_text(text: str, what: str, max_len: int) -> str | None:
    """Why `text` is not acceptable untrusted text of at most `max_len` characters, or None."""
    if len(text) > max_len:
        return f"{what} is longer than {max_len} characters"
    char = unsafe_char(text)
    if char is not None:
        return f"{what} holds the control or format character U+{ord(char):04X}"
    return None


_SHORT = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(char: str) -> str:
    short = _SHORT.get(char)
    if short is not None:
        return short
    if not _unsafe(char):
        return char
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def escape(text: str) -> str:
    """`text` as one inert line for a terminal or a text log (see the module docstring)."""
    if text.isascii() and text.isprintable() and "\\" not in text:
        return text
    return "".join(_escape_char(char) for char in text)


def escape_json(text: str) -> str:
    """A JSON document (as `json.dumps(..., ensure_ascii=False)` writes it) with every unsafe
    character, which JSON leaves raw outside C0, written as a `\\uXXXX` escape: the same JSON
    value, but a terminal or `less` shows no bidi override or C1 control from it."""
    if text.isascii() and "\x7f" not in text:
        return text  # json.dumps already escaped the C0 controls, but not DEL
    out = []
    for char in text:
        if _unsafe(char):
            code = ord(char)
            if code > 0xFFFF:  # a JSON escape of an astral character is a surrogate pair
                code -= 0x10000
                out.append(f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}")
            else:
                out.append(f"\\u{code:04x}")
        else:
            out.append(char)
    return "".join(out)
