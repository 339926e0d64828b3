"""Versioned schema migrations, applied in order at open and recorded in `schema_version`.

Each migration is a file `NNNN_name.sql` beside this module, written once for both dialects
with `{bytes}`, `{auto_id}`, `{without_rowid}` and `{index_key}` placeholders that the runner
fills per dialect. Applying is idempotent: versions already in `schema_version` are skipped, and the
caller runs the whole check-and-apply inside one write transaction that other openers wait on.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources

from verifier.store.sqlbase import Db

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations() -> list[Migration]:
    """Every migration shipped with the package, by ascending version."""
    found: list[Migration] = []
    for entry in resources.files(__package__).iterdir():
        match = _NAME.match(entry.name)
        if match is not None:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise ValueError(f"duplicate migration versions in {versions}")
    return found


def statements(sql: str) -> list[str]:
    """The statements of a migration file, without comments (no ';' inside literals)."""
    lines = [line.split("--", 1)[0] for line in sql.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def _data_steps() -> dict[int, Callable[[Db, int], None]]:
    """Steps that SQL written once for both dialects cannot express, by the migration they
    belong to. They run after every migration of the same call, in the same transaction, so
    the store code they use (imported here) meets the schema it was written for."""
    from verifier.store.ops_agents import drop_untimed_nonces  # noqa: PLC0415
    from verifier.store.ops_log import backfill_nodes  # noqa: PLC0415
    from verifier.store.ops_registry import version_unversioned  # noqa: PLC0415

    return {5: version_unversioned, 9: backfill_nodes, 15: drop_untimed_nonces}


def apply_migrations(db: Db, applied_at_micros: int) -> list[int]:
    """Apply the migrations `db` lacks, inside the caller's transaction; returns their versions."""
    db.run(
        "CREATE TABLE IF NOT EXISTS schema_version ("
        "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)"
    )
    done = {int(row[0]) for row in db.all("SELECT version FROM schema_version")}
    applied: list[int] = []
    steps = _data_steps()
    for migration in load_migrations():
        if migration.version in done:
            continue
        for statement in statements(migration.sql):
            db.run(
                statement.format(
                    bytes=db.dialect.bytes_type,
                    auto_id=db.dialect.auto_id,
                    without_rowid=db.dialect.without_rowid,
                    index_key=db.dialect.index_key,
                )
            )
        db.run(
            "INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)",
            (migration.version, migration.name, applied_at_micros),
        )
        applied.append(migration.version)
    for version in applied:
        if version in steps:
            steps[version](db, applied_at_micros)
    return applied


__all__ = ["Migration", "apply_migrations", "load_migrations", "statements"]
