"""Log lines for journald (no timestamp: the journal adds its own) or JSON when configured."""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import ClassVar, Literal

LOGGER_NAME = "gpu_attest.agent"


class JsonFormatter(logging.Formatter):
    """One JSON object per line; `code` of AttestErrors is carried when a record sets it."""

    _EXTRA: ClassVar[tuple[str, ...]] = ("code", "seq", "agent_id")

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, object] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in self._EXTRA:
            if hasattr(record, key):
                data[key] = getattr(record, key)
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False)


class JournaldFormatter(logging.Formatter):
    """`<priority>message`: journald reads the syslog priority prefix and adds the timestamp."""

    _PRIORITY: ClassVar[dict[int, int]] = {
        logging.DEBUG: 7,
        logging.INFO: 6,
        logging.WARNING: 4,
        logging.ERROR: 3,
        logging.CRITICAL: 2,
    }

    def format(self, record: logging.LogRecord) -> str:
        priority = self._PRIORITY.get(record.levelno, 6)
        return f"<{priority}>{super().format(record)}"


def under_journald() -> bool:
    """systemd sets JOURNAL_STREAM when stdout/stderr are connected to the journal."""
    return bool(os.environ.get("JOURNAL_STREAM"))


def setup_logging(fmt: Literal["text", "json"], level: int = logging.INFO) -> logging.Logger:
    """Configure the agent logger on stderr; calling it again (SIGHUP) replaces the handler."""
    logger = logging.getLogger(LOGGER_NAME)
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    elif under_journald():
        handler.setFormatter(JournaldFormatter("%(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for old in list(logger.handlers):
        logger.removeHandler(old)
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    return logger


def get_logger(name: str = "") -> logging.Logger:
    return logging.getLogger(f"{LOGGER_NAME}.{name}" if name else LOGGER_NAME)
