"""The one log format of the agent and the verifier: JSON lines, journald or text, on stderr.

Both programs log to stderr (stdout carries command output: `--json` listings, envelopes, PEM)
through `setup_logging`. The three formats:

* `json`: one object per line with the keys `ts` (UTC, RFC 3339 with milliseconds:
  "2026-12-04T16:54:27.123Z"), `level` (lower case), `logger`, `msg`, then those of
  `EXTRA_KEYS` a record carries (`logger.warning(..., extra={"code": exc.code})`), and `exc`
  with the traceback when there is one;
* journald (text under systemd, which sets JOURNAL_STREAM): `<priority>logger: msg`, the syslog
  priority prefix journald reads; the journal adds its own timestamp;
* text: `ts LEVEL logger: msg`, with the same timestamp as JSON.

Standard library only (and attest/text.py, itself standard library only).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import ClassVar, Literal, TextIO

from attest.text import escape, escape_json

LogFormat = Literal["text", "json"]

#: Record attributes copied into a JSON line when set, in this order.
EXTRA_KEYS: tuple[str, ...] = ("code", "agent_id", "seq")
#: The keys every JSON line has, in this order.
BASE_KEYS: tuple[str, ...] = ("ts", "level", "logger", "msg")


def format_ts(created: float) -> str:
    """A record's time as UTC RFC 3339 with milliseconds: 2026-12-04T16:54:27.123Z."""
    seconds = int(created)
    millis = min(int((created - seconds) * 1000), 999)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: `BASE_KEYS`, then the `EXTRA_KEYS` a record sets, then `exc`."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, object] = {
            "ts": format_ts(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in EXTRA_KEYS:
            if hasattr(record, key):
                data[key] = getattr(record, key)
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        # ensure_ascii=False keeps names readable, but leaves bidi overrides and C1 controls
        # raw: escape_json writes those as \\u escapes (the same JSON value).
        return escape_json(json.dumps(data, ensure_ascii=False, default=str))


class TextFormatter(logging.Formatter):
    """`ts LEVEL logger: msg`, the timestamp as in JSON lines; the message escaped, so text an
    agent chose cannot forge a line or drive a terminal (attest/text.py)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802
        return _escaped(super().formatMessage, record)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802, ARG002
        return format_ts(record.created)


class JournaldFormatter(logging.Formatter):
    """`<priority>message`: journald reads the syslog priority prefix and adds the timestamp."""

    _PRIORITY: ClassVar[dict[int, int]] = {
        logging.DEBUG: 7,
        logging.INFO: 6,
        logging.WARNING: 4,
        logging.ERROR: 3,
        logging.CRITICAL: 2,
    }

    def __init__(self, fmt: str = "%(name)s: %(message)s") -> None:
        super().__init__(fmt)

    def format(self, record: logging.LogRecord) -> str:
        priority = self._PRIORITY.get(record.levelno, 6)
        return f"<{priority}>{super().format(record)}"

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802
        return _escaped(super().formatMessage, record)


def _escaped(format_message: Callable[[logging.LogRecord], str], rec: logging.LogRecord) -> str:
    """The formatted line with the message escaped (a traceback, appended after, is ours)."""
    message = rec.message
    rec.message = escape(message)
    try:
        return format_message(rec)
    finally:
        rec.message = message


def under_journald() -> bool:
    """systemd sets JOURNAL_STREAM when stdout/stderr are connected to the journal."""
    return bool(os.environ.get("JOURNAL_STREAM"))


def formatter_for(fmt: LogFormat) -> logging.Formatter:
    """The formatter `setup_logging` installs for `fmt` in this environment."""
    if fmt == "json":
        return JsonFormatter()
    if under_journald():
        return JournaldFormatter()
    return TextFormatter()


class StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever `sys.stderr` is at each record (so redirection and capture work)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def setup_logging(
    fmt: LogFormat, logger_name: str = "", level: int = logging.INFO
) -> logging.Logger:
    """Send `logger_name`'s records (the root logger's by default) to stderr in `fmt`.

    Calling it again (the agent's SIGHUP) replaces the handler it installed before; handlers
    others installed (pytest's capture) stay. A named logger stops propagating to the root, so
    its lines are written once.
    """
    logger = logging.getLogger(logger_name or None)
    for old in [h for h in logger.handlers if isinstance(h, StderrHandler)]:
        logger.removeHandler(old)
    handler = StderrHandler()
    handler.setFormatter(formatter_for(fmt))
    logger.addHandler(handler)
    logger.setLevel(level)
    if logger_name:
        logger.propagate = False
    return logger
