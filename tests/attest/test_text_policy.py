"""attest/text.py and the identifier grammars of the decoding policy (attest/identifiers.py):
real identifiers pass, control, NUL and bidi characters never do, escaped text is always one
inert line (tests/agent/test_producers_fit_policy.py: what the agent emits passes)."""

from __future__ import annotations

import json
import logging
import string

from hypothesis import example, given
from hypothesis import strategies as st

from attest import identifiers as ids
from attest.logfmt import JsonFormatter, TextFormatter
from attest.text import check_text, escape, escape_json, unsafe_char

#: Characters that must never reach a terminal raw, nor be stored.
BIDI = [chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))]
CONTROLS = [chr(c) for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))]
DANGEROUS = st.sampled_from([*BIDI, *CONTROLS, "\u200b", "\ufeff", "\u2028", "\u2029"])


@given(st.text(max_size=20), DANGEROUS, st.text(max_size=20))
def test_control_and_bidi_characters_are_always_refused(before: str, bad: str, after: str) -> None:
    text = before + bad + after
    assert unsafe_char(text) is not None
    assert check_text(text, "name", 1000) is not None


@given(st.text(max_size=60))
def test_escaped_text_is_one_inert_line(text: str) -> None:
    out = escape(text)
    assert unsafe_char(out) is None
    assert "\n" not in out and "\x1b" not in out
    # Distinct texts stay distinct (a backslash is doubled, so no escape can be faked).
    assert escape(text + "\\x1b") != escape(text + "\x1b")


@example("\x7f")  # DEL: ASCII, but json.dumps leaves it raw
@given(st.text(max_size=60))
def test_escape_json_keeps_the_value_and_drops_raw_bidi(text: str) -> None:
    raw = json.dumps({"msg": text}, ensure_ascii=False)
    out = escape_json(raw)
    assert json.loads(out) == {"msg": text}
    assert unsafe_char(out) is None


@given(st.text(alphabet=string.printable.strip() + " ", max_size=40))
def test_printable_ascii_is_accepted_and_left_alone(text: str) -> None:
    assert unsafe_char(text) is None
    if "\\" not in text:
        assert escape(text) == text


def test_real_identifiers_fit_the_grammars() -> None:
    assert ids.GPU_UUID.match("GPU-00000000-0000-4000-8000-000000000001")
    assert ids.MIG_UUID.match("MIG-4a2b1c3d-5e6f-7081-92a3-b4c5d6e7f809")
    assert ids.MIG_UUID.match("MIG-GPU-4a2b1c3d-5e6f-7081-92a3-b4c5d6e7f809/7/0")
    assert ids.BUS_ID.match("00000000:18:00.0") and ids.BUS_ID.match("0000:3B:00.0")
    assert ids.SERIAL.match("1650123456789")
    assert ids.HOSTNAME.match("gpu-node-017.fra1.example.com")
    assert ids.MACHINE_ID.match("4c4c4544004b4d108051b4c04f4a3133")
    for bad in ("GPU-0000", "GPU-00000000-0000-4000-8000-00000000000G", "gpu-x\n", ""):
        assert not ids.GPU_UUID.match(bad)
    assert not ids.HOSTNAME.match("evil\nhost") and not ids.HOSTNAME.match("-x")
    assert not ids.BUS_ID.match("00000000:18:00.0\n")


def test_text_logs_escape_and_json_logs_neutralise_untrusted_text() -> None:
    record = logging.LogRecord(
        "verifier", logging.WARNING, __file__, 1, "refused %s", ("x\nforged\x1b[2J\u202e",), None
    )
    text = TextFormatter().format(record)
    assert "\n" not in text and "\x1b" not in text and "\u202e" not in text
    line = JsonFormatter().format(record)
    assert "\u202e" not in line and json.loads(line)["msg"] == "refused x\nforged\x1b[2J\u202e"
