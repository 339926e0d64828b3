"""Fixtures of the verifier tests: a configured state dir and a running server on loopback.

The store fixtures (`backend`, `store`, over SQLite and PostgreSQL) are defined in
tests/verifier/store/conftest.py and offered here too, for the tests of verifier modules that
read the store (tests/verifier/test_checkpointer.py); they are the same functions, so the store
tests below receive exactly what they did.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.verifier.store.conftest import backend, pg_schema, store  # noqa: F401 - offered here
from verifier.config import StreamConfig, VerifierConfig
from verifier.server import Running, start


def make_config(tmp_path: Path, **stream: object) -> VerifierConfig:
    return VerifierConfig(
        listen="127.0.0.1:0",
        enroll_listen="127.0.0.1:0",
        state_dir=tmp_path / "state",
        database=str(tmp_path / "verifier.db"),
        metrics_listen="",
        stream=StreamConfig(rate_per_s=1000.0, rate_burst=1000, **stream),  # type: ignore[arg-type]
    )


@pytest.fixture
def config(tmp_path: Path) -> VerifierConfig:
    return make_config(tmp_path)


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    """A verifier.toml for the CLI tests (state and SQLite database in tmp_path)."""
    path = tmp_path / "verifier.toml"
    path.write_text(
        f'state_dir = "{tmp_path / "state"}"\n'
        f'database = "{tmp_path / "v.db"}"\n'
        'listen = "0.0.0.0:0"\nmetrics_listen = ""\n'
    )
    return path


@pytest.fixture
async def running(config: VerifierConfig) -> AsyncIterator[Running]:
    server = await start(config)
    try:
        yield server
    finally:
        await server.stop(0)
