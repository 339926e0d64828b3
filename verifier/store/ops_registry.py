"""Transaction bodies that replace and read the compliance registry: the current version in the
reg_* tables, and every imported version in registry_versions (docs/design.md §6)."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import date, timedelta
from typing import Any

from attest.errors import StoreError
from verifier.model import AuditKind
from verifier.registry_model import (
    Arrangement,
    Authorization,
    AuthorizationKind,
    Entity,
    Landmark,
    Registry,
    RegistryVersion,
    Site,
    VeuStatus,
)
from verifier.store import ops_compliance
from verifier.store.ops_agents import audit
from verifier.store.sqlbase import Db, from_micros

_TABLES = ("reg_entities", "reg_sites", "reg_authorizations", "reg_landmarks", "reg_arrangements")
_SECOND = timedelta(seconds=1)


def import_registry(db: Db, registry: Registry, now_us: int, by: str, source: bytes) -> int:
    """Replace the current registry and keep it as a new version; returns its number."""
    _replace_current(db, registry)
    ops_compliance.new_epoch(db)  # holdings are judged against another registry from now
    digest = hashlib.sha256(source).digest()
    return _add_version(db, registry, now_us, by=by, source=source, digest=digest)


#: Who "imported" the registry a store held when migration 0005 gave registries a history.
BEFORE_HISTORY = "migration 0005 (imported before registry history was kept)"


def version_unversioned(db: Db, now_us: int) -> None:
    """Migration 0005's data step: a registry imported before versions were kept becomes the
    first version, dated at the migration. Its real import date is unknown, so a date before
    the migration reads no registry (fail closed) rather than a guessed one. No file was kept:
    the digest is of the stored content."""
    registry = load_registry(db)
    if registry == Registry():
        return
    content = json.dumps(_encode(registry), sort_keys=True).encode("utf-8")
    digest = hashlib.sha256(content).digest()
    _add_version(db, registry, now_us, by=BEFORE_HISTORY, source=b"", digest=digest)


def _add_version(
    db: Db, registry: Registry, now_us: int, *, by: str, source: bytes, digest: bytes
) -> int:
    row = db.one(
        "INSERT INTO registry_versions (imported_at, imported_by, digest, source, content) "
        "VALUES (?, ?, ?, ?, ?) RETURNING version",
        (now_us, by, digest, source, json.dumps(_encode(registry), sort_keys=True)),
    )
    if row is None:
        raise StoreError("registry version insert returned no row")
    version = int(row[0])
    audit(
        db,
        AuditKind.REGISTRY,
        now_us,
        "",
        message=f"registry version {version} imported by {by}, sha256 {digest.hex()}",
    )
    return version


def registry_history(db: Db) -> list[RegistryVersion]:
    """Every imported version, oldest first (a registry is small and imported rarely)."""
    return [
        _version(r)
        for r in db.all(
            "SELECT version, imported_at, imported_by, digest, content FROM registry_versions "
            "ORDER BY version"
        )
    ]


def _version(r: tuple[Any, ...]) -> RegistryVersion:
    content = json.loads(r[4])
    return RegistryVersion(
        version=int(r[0]),
        imported_at=from_micros(r[1]),
        imported_by=r[2],
        digest=bytes(r[3]),
        **{kind: len(content[kind]) for kind in _KINDS},
    )


def load_registry_at(db: Db, end_us: int) -> Registry:
    """The registry of the latest import before `end_us` (exclusive); empty before any."""
    row = db.one(
        "SELECT content FROM registry_versions WHERE imported_at < ? "
        "ORDER BY imported_at DESC, version DESC LIMIT 1",
        (end_us,),
    )
    return Registry() if row is None else _decode(json.loads(row[0]))


def present_gpus_by_site(db: Db) -> dict[str, int]:
    """Present GPUs of active agents, counted per the site the agents enrolled at (SQL does the
    counting: a fleet can hold a million GPUs)."""
    rows = db.all(
        "SELECT a.site_id, COUNT(*) FROM gpu_sightings g JOIN agents a "
        "ON a.agent_id = g.agent_id WHERE g.present = 1 AND a.status = 'active' "
        "GROUP BY a.site_id"
    )
    return {r[0]: int(r[1]) for r in rows}


def _replace_current(db: Db, registry: Registry) -> None:
    for table in _TABLES:
        db.run(f"DELETE FROM {table}")
    db.many(
        "INSERT INTO reg_entities (id, name, hq_country, parent_hq_country, veu) "
        "VALUES (?, ?, ?, ?, ?)",
        [(e.id, e.name, e.hq_country, e.parent_hq_country, e.veu.value) for e in registry.entities],
    )
    db.many(
        "INSERT INTO reg_sites (id, entity, country, lat, lon, facility_power_kw, "
        "offline_deadline_s) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            (
                s.id,
                s.entity,
                s.country,
                s.lat,
                s.lon,
                s.facility_power_kw,
                _seconds(s.offline_deadline),
            )
            for s in registry.sites
        ],
    )
    db.many(
        "INSERT INTO reg_authorizations (id, holder, kind, countries, sites, max_units, "
        "max_tpp, valid_from, valid_until) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                a.id,
                a.holder,
                a.kind.value,
                ",".join(a.countries),
                ",".join(a.sites),
                a.max_units,
                a.max_tpp,
                a.valid_from.isoformat(),
                None if a.valid_until is None else a.valid_until.isoformat(),
            )
            for a in registry.authorizations
        ],
    )
    db.many(
        "INSERT INTO reg_landmarks (id, lat, lon, public_key) VALUES (?, ?, ?, ?)",
        [(m.id, m.lat, m.lon, m.public_key) for m in registry.landmarks],
    )
    db.many(
        "INSERT INTO reg_arrangements (country, since) VALUES (?, ?)",
        [(g.country, g.since.isoformat()) for g in registry.arrangements],
    )


def _seconds(deadline: timedelta | None) -> int | None:
    return None if deadline is None else deadline // _SECOND


def _deadline(seconds: object) -> timedelta | None:
    return None if seconds is None else timedelta(seconds=int(str(seconds)))


def _split(text: str) -> tuple[str, ...]:
    return tuple(part for part in text.split(",") if part)


def load_registry(db: Db) -> Registry:
    entities = tuple(
        Entity(r[0], r[1], r[2], r[3], VeuStatus(r[4]))
        for r in db.all(
            "SELECT id, name, hq_country, parent_hq_country, veu FROM reg_entities ORDER BY id"
        )
    )
    sites = tuple(
        Site(r[0], r[1], r[2], float(r[3]), float(r[4]), None if r[5] is None else float(r[5]),
             _deadline(r[6]))
        for r in db.all(
            "SELECT id, entity, country, lat, lon, facility_power_kw, offline_deadline_s "
            "FROM reg_sites ORDER BY id"
        )
    )  # fmt: skip
    authorizations = tuple(
        Authorization(
            id=r[0],
            holder=r[1],
            kind=AuthorizationKind(r[2]),
            countries=_split(r[3]),
            sites=_split(r[4]),
            max_units=None if r[5] is None else int(r[5]),
            max_tpp=None if r[6] is None else float(r[6]),
            valid_from=date.fromisoformat(r[7]),
            valid_until=None if r[8] is None else date.fromisoformat(r[8]),
        )
        for r in db.all(
            "SELECT id, holder, kind, countries, sites, max_units, max_tpp, valid_from, "
            "valid_until FROM reg_authorizations ORDER BY id"
        )
    )
    landmarks = tuple(
        Landmark(r[0], float(r[1]), float(r[2]), bytes(r[3]))
        for r in db.all("SELECT id, lat, lon, public_key FROM reg_landmarks ORDER BY id")
    )
    arrangements = tuple(
        Arrangement(r[0], date.fromisoformat(r[1]))
        for r in db.all("SELECT country, since FROM reg_arrangements ORDER BY country, since")
    )
    return Registry(entities, sites, authorizations, landmarks, arrangements)


# --- a version's content: the parsed registry as JSON ------------------------------------------

_KINDS = ("entities", "sites", "authorizations", "landmarks", "arrangements")


def _day(value: date | None) -> str | None:
    return None if value is None else value.isoformat()


def _encode(registry: Registry) -> dict[str, list[dict[str, Any]]]:
    """The registry as JSON values; `_decode` is its inverse (a round trip is tested)."""
    return {
        "entities": [
            {"id": e.id, "name": e.name, "hq_country": e.hq_country,
             "parent_hq_country": e.parent_hq_country, "veu": e.veu.value}
            for e in registry.entities
        ],
        "sites": [
            {"id": s.id, "entity": s.entity, "country": s.country, "lat": s.lat, "lon": s.lon,
             "facility_power_kw": s.facility_power_kw,
             "offline_deadline_s": _seconds(s.offline_deadline)}
            for s in registry.sites
        ],
        "authorizations": [
            {"id": a.id, "holder": a.holder, "kind": a.kind.value, "countries": list(a.countries),
             "sites": list(a.sites), "max_units": a.max_units, "max_tpp": a.max_tpp,
             "valid_from": a.valid_from.isoformat(), "valid_until": _day(a.valid_until)}
            for a in registry.authorizations
        ],
        "landmarks": [
            {"id": m.id, "lat": m.lat, "lon": m.lon,
             "public_key": base64.b64encode(m.public_key).decode("ascii")}
            for m in registry.landmarks
        ],
        "arrangements": [
            {"country": g.country, "since": g.since.isoformat()} for g in registry.arrangements
        ],
    }  # fmt: skip


def _decode(content: dict[str, list[dict[str, Any]]]) -> Registry:
    """In the order the reg_* tables are read (by id), so either source gives equal values."""
    content = {
        kind: sorted(
            items, key=lambda i: (i.get("id", ""), i.get("country", ""), i.get("since", ""))
        )
        for kind, items in content.items()
    }

    def opt_day(value: str | None) -> date | None:
        return None if value is None else date.fromisoformat(value)

    return Registry(
        entities=tuple(
            Entity(e["id"], e["name"], e["hq_country"], e["parent_hq_country"], VeuStatus(e["veu"]))
            for e in content["entities"]
        ),
        sites=tuple(
            Site(
                s["id"],
                s["entity"],
                s["country"],
                s["lat"],
                s["lon"],
                s["facility_power_kw"],
                _deadline(s["offline_deadline_s"]),
            )
            for s in content["sites"]
        ),
        authorizations=tuple(
            Authorization(
                id=a["id"],
                holder=a["holder"],
                kind=AuthorizationKind(a["kind"]),
                countries=tuple(a["countries"]),
                sites=tuple(a["sites"]),
                max_units=a["max_units"],
                max_tpp=a["max_tpp"],
                valid_from=date.fromisoformat(a["valid_from"]),
                valid_until=opt_day(a["valid_until"]),
            )
            for a in content["authorizations"]
        ),
        landmarks=tuple(
            Landmark(m["id"], m["lat"], m["lon"], base64.b64decode(m["public_key"]))
            for m in content["landmarks"]
        ),
        arrangements=tuple(
            Arrangement(g["country"], date.fromisoformat(g["since"]))
            for g in content["arrangements"]
        ),
    )


__all__ = [
    "import_registry",
    "load_registry",
    "load_registry_at",
    "present_gpus_by_site",
    "registry_history",
]
