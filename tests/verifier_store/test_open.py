"""Opening stores: URL schemes, and an unreachable PostgreSQL reported as unavailable."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from attest.errors import ConfigError, StoreError, StoreUnavailableError
from verifier.store import open_store
from verifier.store.api import StoreOptions
from verifier.store.sqlite import SqliteStore


def test_unknown_scheme_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        open_store("mysql://localhost/x")


def test_sqlite_urls_follow_sqlalchemy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    absolute = open_store(f"sqlite:///{tmp_path}/abs.db")
    assert isinstance(absolute, SqliteStore)
    assert absolute.path == tmp_path / "abs.db"
    absolute.close()
    monkeypatch.chdir(tmp_path)
    relative = open_store("sqlite:///sub/rel.db")
    assert isinstance(relative, SqliteStore)
    assert (tmp_path / "sub" / "rel.db").exists()
    relative.close()
    with pytest.raises(StoreError):
        relative.log_size()


def test_unreachable_postgresql_is_unavailable() -> None:
    options = StoreOptions(unavailable_timeout=timedelta(seconds=0.3))
    with pytest.raises(StoreUnavailableError):
        open_store("postgresql://postgres@127.0.0.1:1/test?connect_timeout=1", options)
