"""Transaction bodies that replace and read the compliance registry tables."""

from __future__ import annotations

from datetime import date

from verifier.registry_model import (
    Arrangement,
    Authorization,
    AuthorizationKind,
    Entity,
    Landmark,
    Registry,
    Site,
    VeuStatus,
)
from verifier.store.sqlbase import Db

_TABLES = ("reg_entities", "reg_sites", "reg_authorizations", "reg_landmarks", "reg_arrangements")


def import_registry(db: Db, registry: Registry) -> None:
    for table in _TABLES:
        db.run(f"DELETE FROM {table}")
    db.many(
        "INSERT INTO reg_entities (id, name, hq_country, parent_hq_country, veu) "
        "VALUES (?, ?, ?, ?, ?)",
        [(e.id, e.name, e.hq_country, e.parent_hq_country, e.veu.value) for e in registry.entities],
    )
    db.many(
        "INSERT INTO reg_sites (id, entity, country, lat, lon, facility_power_kw) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        [(s.id, s.entity, s.country, s.lat, s.lon, s.facility_power_kw) for s in registry.sites],
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
        Site(r[0], r[1], r[2], float(r[3]), float(r[4]), None if r[5] is None else float(r[5]))
        for r in db.all(
            "SELECT id, entity, country, lat, lon, facility_power_kw FROM reg_sites ORDER BY id"
        )
    )
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
