"""attest/logfmt.py: the one log format of the agent and the verifier."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator

import pytest

from attest import logfmt

NAME = "gpu_attest.test.logfmt"


def _record(
    msg: str = "spool %s", *args: object, level: int = logging.WARNING
) -> logging.LogRecord:
    record = logging.LogRecord(NAME, level, "f.py", 1, msg, args or ("full",), None)
    record.created = 1796403267.1237  # 2026-12-04T16:54:27.1237Z
    return record


def test_timestamps_are_utc_rfc3339_with_milliseconds() -> None:
    assert logfmt.format_ts(1796403267.1237) == "2026-12-04T16:54:27.123Z"
    assert logfmt.format_ts(1796403267.0) == "2026-12-04T16:54:27.000Z"
    assert logfmt.format_ts(1796403267.9999) == "2026-12-04T16:54:27.999Z"


def test_json_line_keys_in_order_with_the_extras_a_record_sets() -> None:
    record = _record()
    record.seq, record.code = 7, "spool-full"
    data = json.loads(logfmt.JsonFormatter().format(record))
    assert list(data) == ["ts", "level", "logger", "msg", "code", "seq"]
    assert data == {
        "ts": "2026-12-04T16:54:27.123Z",
        "level": "warning",
        "logger": NAME,
        "msg": "spool full",
        "code": "spool-full",
        "seq": 7,
    }


def test_json_line_carries_the_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logfmt.JsonFormatter())
    logger = logging.getLogger(f"{NAME}.exc")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.error("failed", exc_info=ValueError("boom"))
    finally:
        logger.removeHandler(handler)
    data = json.loads(capsys.readouterr().err)
    assert data["msg"] == "failed" and "ValueError: boom" in data["exc"]


def test_text_and_journald_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    record = _record()
    text = logfmt.TextFormatter().format(record)
    assert text == f"2026-12-04T16:54:27.123Z WARNING {NAME}: spool full"
    assert logfmt.JournaldFormatter().format(record) == f"<4>{NAME}: spool full"
    assert logfmt.JournaldFormatter("%(message)s").format(record) == "<4>spool full"
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    assert isinstance(logfmt.formatter_for("text"), logfmt.TextFormatter)
    monkeypatch.setenv("JOURNAL_STREAM", "8:1234")
    assert isinstance(logfmt.formatter_for("text"), logfmt.JournaldFormatter)
    assert isinstance(logfmt.formatter_for("json"), logfmt.JsonFormatter)


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    named = logging.getLogger(NAME)
    yield named
    named.handlers.clear()
    named.propagate = True


def test_setup_writes_to_stderr_and_replaces_its_own_handler(
    logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    other = logging.NullHandler()
    logger.addHandler(other)
    logfmt.setup_logging("text", NAME)
    assert logfmt.setup_logging("json", NAME) is logger
    assert len([h for h in logger.handlers if isinstance(h, logfmt.StderrHandler)]) == 1
    assert other in logger.handlers and not logger.propagate
    logger.info("hello %s", "world")
    out, err = capsys.readouterr()
    assert out == "" and json.loads(err)["msg"] == "hello world"
