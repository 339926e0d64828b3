"""What the SQLite and PostgreSQL stores share: the dialect, a thin cursor adapter that speaks
one placeholder style, and the value conversions between rows and frozen records."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from verifier.model import AgentKey, AgentRecord, AgentStatus

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)

Row = tuple[Any, ...]
#: Bound parameters per SQLite statement: 999 is the limit of SQLite builds before 3.32.
_SQLITE_MAX_PARAMS = 999


@dataclass(frozen=True)
class Dialect:
    """The explicit differences between the two SQL dialects we speak."""

    name: str
    placeholder: str  # what "?" in our SQL becomes
    bytes_type: str
    auto_id: str
    for_update: str  # row-lock suffix for SELECT, "" where the engine locks the whole file
    without_rowid: str  # table suffix: SQLite keeps small keyed rows in one B-tree this way
    bulk_arrays: bool  # True: write many rows as one statement over unnest(array) parameters
    #: a log index as a table's key: SQLite's rowid itself (the table is its one B-tree)
    index_key: str


SQLITE = Dialect(
    "sqlite", "?", "BLOB", "INTEGER PRIMARY KEY", "", " WITHOUT ROWID", False, "INTEGER PRIMARY KEY"
)
POSTGRES = Dialect(
    "postgres",
    "%s",
    "BYTEA",
    "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
    " FOR UPDATE",
    "",
    True,
    "BIGINT PRIMARY KEY",
)


class Cursor(Protocol):
    """The DB-API subset both sqlite3 and psycopg cursors provide."""

    @property
    def rowcount(self) -> int: ...

    def execute(self, query: Any, params: Any = ..., /) -> Any: ...

    def executemany(self, query: Any, params_seq: Any, /) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Db:
    """A cursor inside an open transaction, taking SQL written with `?` placeholders."""

    def __init__(self, cursor: Cursor, dialect: Dialect) -> None:
        self._cursor = cursor
        self.dialect = dialect
        self._cache: dict[str, str] = {}

    def _sql(self, text: str) -> str:
        translated = self._cache.get(text)
        if translated is None:
            translated = text.replace("?", self.dialect.placeholder)
            self._cache[text] = translated
        return translated

    def run(self, text: str, params: Sequence[object] = ()) -> int:
        """Execute one statement; returns the number of rows it changed."""
        self._cursor.execute(self._sql(text), tuple(params))
        return self._cursor.rowcount

    def many(self, text: str, rows: Iterable[Sequence[object]]) -> None:
        """Execute one statement per row; `rowcount` then holds the total rows changed."""
        batch = [tuple(r) for r in rows]
        if batch:
            self._cursor.executemany(self._sql(text), batch)

    @property
    def rowcount(self) -> int:
        """Rows changed by the last `run` or `many`."""
        return self._cursor.rowcount

    def all(self, text: str, params: Sequence[object] = ()) -> list[Row]:
        self._cursor.execute(self._sql(text), tuple(params))
        return [tuple(r) for r in self._cursor.fetchall()]

    def one(self, text: str, params: Sequence[object] = ()) -> Row | None:
        rows = self.all(text, params)
        return rows[0] if rows else None

    def insert_rows(
        self,
        table: str,
        columns: Sequence[tuple[str, str]],
        rows: Sequence[Sequence[object]],
        suffix: str = "",
    ) -> None:
        """INSERT many rows. `columns` are (name, PostgreSQL type) pairs; `suffix` may carry an
        ON CONFLICT clause. SQLite gets multi-row VALUES statements (executemany would step,
        and hand the GIL back and forth with the event loop, once per row); PostgreSQL gets
        one statement over unnest(arrays), one round trip for the lot."""
        if not rows:
            return
        names = ", ".join(name for name, _ in columns)
        if not self.dialect.bulk_arrays:
            marks = "(" + ", ".join("?" * len(columns)) + ")"
            per = max(1, _SQLITE_MAX_PARAMS // len(columns))
            for start in range(0, len(rows), per):
                chunk = rows[start : start + per]
                values = ", ".join([marks] * len(chunk))
                self._cursor.execute(
                    f"INSERT INTO {table} ({names}) VALUES {values}{suffix}",
                    [value for row in chunk for value in row],
                )
            return
        arrays = [list(column) for column in zip(*rows, strict=True)]
        casts = ", ".join(f"?::{kind}[]" for _, kind in columns)
        self.run_arrays(
            f"INSERT INTO {table} ({names}) SELECT * FROM unnest({casts}){suffix}", arrays
        )

    def run_arrays(self, text: str, params: Sequence[object]) -> int:
        """Execute a PostgreSQL statement over array parameters, sent in binary: psycopg's
        text form escapes every bytea element with a regex, ten times the CPU."""
        self._cursor.execute(text.replace("?", "%b"), tuple(params))
        return self._cursor.rowcount

    def in_list(self, count: int) -> str:
        """`(?, ?, ...)` for an IN clause of `count` values (count > 0)."""
        return "(" + ", ".join("?" * count) + ")"


def to_micros(when: datetime) -> int:
    """A timezone-aware datetime as integer microseconds since the epoch."""
    if when.tzinfo is None:
        raise ValueError("naive datetime given to the store")
    return (when - _EPOCH) // _MICRO


def opt_micros(when: datetime | None) -> int | None:
    return None if when is None else to_micros(when)


def from_micros(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=int(value))


def opt_from_micros(value: int | None) -> datetime | None:
    return None if value is None else from_micros(value)


AGENT_COLUMNS = (
    "agent_id, site_id, hostname, machine_id, status, token_hash, enrolled_at, last_seq, "
    "last_hash, first_attested_at, last_seen_at, last_fresh_at, next_due, revoked_at"
)


def where_all(*conditions: str) -> str:
    """` WHERE c1 AND c2 ...` over the non-empty conditions, or "" when there are none."""
    present = [f"({c})" for c in conditions if c]
    return " WHERE " + " AND ".join(present) if present else ""


def read_agents(
    db: Db,
    where: str = "",
    params: Sequence[object] = (),
    *,
    after: str | None = None,
    limit: int | None = None,
) -> list[AgentRecord]:
    """Agents matching `where` (SQL after WHERE, may be empty), with their keys, by agent_id.

    With `after` and `limit`: one keyset page, the first `limit` agents whose id sorts after
    `after`; memory is then O(limit) whatever the number of agents.
    """
    page = "" if after is None else "agents.agent_id > ?"
    page_params = [*params] if after is None else [*params, after]
    tail, tail_params = ("", []) if limit is None else (" LIMIT ?", [limit])
    rows = db.all(
        f"SELECT {AGENT_COLUMNS} FROM agents{where_all(where, page)} ORDER BY agent_id{tail}",
        [*page_params, *tail_params],
    )
    if not rows:
        return []
    keys: dict[str, list[AgentKey]] = {}
    # The page's keys: same filter, bounded by the page's last id (never the whole table).
    key_rows = db.all(
        "SELECT k.agent_id, k.keyid, k.spki_der, k.added_at, k.retired_at FROM agent_keys k "
        f"JOIN agents ON agents.agent_id = k.agent_id"
        f"{where_all(where, page, 'agents.agent_id <= ?')} "
        "ORDER BY k.agent_id, k.added_at, k.keyid",
        [*page_params, rows[-1][0]],
    )
    for agent_id, keyid, spki, added, retired in key_rows:
        keys.setdefault(agent_id, []).append(
            AgentKey(keyid, bytes(spki), from_micros(added), opt_from_micros(retired))
        )
    return [_agent(row, tuple(keys.get(row[0], ()))) for row in rows]


def _agent(row: Row, keys: tuple[AgentKey, ...]) -> AgentRecord:
    return AgentRecord(
        agent_id=row[0],
        site_id=row[1],
        hostname=row[2],
        machine_id=row[3],
        status=AgentStatus(row[4]),
        keys=keys,
        token_hash=bytes(row[5]),
        enrolled_at=from_micros(row[6]),
        last_seq=int(row[7]),
        last_hash=bytes(row[8]),
        first_attested_at=opt_from_micros(row[9]),
        last_seen_at=opt_from_micros(row[10]),
        last_fresh_at=opt_from_micros(row[11]),
        next_due=from_micros(row[12]),
        revoked_at=opt_from_micros(row[13]),
    )
