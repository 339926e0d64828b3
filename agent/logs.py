"""The agent's loggers (`gpu_attest.agent.*`); the format is attest/logfmt.py's, on stderr."""

from __future__ import annotations

import logging

from attest import logfmt

LOGGER_NAME = "gpu_attest.agent"


def setup_logging(fmt: logfmt.LogFormat, level: int = logging.INFO) -> logging.Logger:
    """Configure the agent logger on stderr; calling it again (SIGHUP) replaces the handler."""
    return logfmt.setup_logging(fmt, LOGGER_NAME, level)


def get_logger(name: str = "") -> logging.Logger:
    return logging.getLogger(f"{LOGGER_NAME}.{name}" if name else LOGGER_NAME)
