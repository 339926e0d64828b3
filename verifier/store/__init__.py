"""The verifier's storage: the `Store` port (api.py), SQLite and PostgreSQL implementations,
group commit (batch.py) and versioned schema migrations (migrations/)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from attest.errors import ConfigError
from verifier.store.api import Store, StoreOptions


def open_store(url: str, options: StoreOptions | None = None) -> Store:
    """Open (and migrate) the store named by `url`.

    `sqlite:///relative/path.db`, `sqlite:////absolute/path.db` (as SQLAlchemy spells them), or
    a PostgreSQL URL `postgresql://user@host:port/db`. Raises ConfigError for another scheme,
    StoreUnavailableError when the database cannot be reached.
    """
    if url.startswith("sqlite:///"):
        from verifier.store.sqlite import SqliteStore  # noqa: PLC0415 - keep psycopg optional

        path = Path(url.removeprefix("sqlite:///"))
        options = options or StoreOptions()
        if options.archive_dir is None:
            # `log archive` segments beside the database: the state directory by default.
            options = dataclasses.replace(options, archive_dir=path.parent / "archive")
        return SqliteStore(path, options)
    if url.startswith(("postgresql://", "postgres://")):
        from verifier.store.postgres import PostgresStore  # noqa: PLC0415

        return PostgresStore(url, options)
    raise ConfigError(f"unsupported store URL scheme in {url.split(':', 1)[0]!r}")
