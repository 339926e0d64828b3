"""The compliance registry as frozen values (docs/design.md §6): entities, sites, authorizations,
landmarks and government-to-government arrangements.

Parsing the TOML file lives in `verifier.registry`; these classes are what the parser returns,
what the store keeps and what the compliance rules read.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import date, datetime, timedelta


class VeuStatus(enum.Enum):
    UVEU = "uveu"
    NVEU = "nveu"
    NONE = "none"


class AuthorizationKind(enum.Enum):
    LICENCE = "licence"
    NVEU = "nveu"
    UVEU = "uveu"
    LPP = "lpp"
    AIA = "aia"


@dataclass(frozen=True)
class Entity:
    id: str
    name: str
    hq_country: str  # ISO 3166-1 alpha-2, upper case
    parent_hq_country: str  # defaults to hq_country in the file
    veu: VeuStatus


@dataclass(frozen=True)
class Site:
    id: str
    entity: str
    country: str
    lat: float
    lon: float
    facility_power_kw: float | None = None
    # A site that reports only through `ingest` (offline) is judged against this deadline
    # instead of the attestation deadline (`agent-stale`); None: the fleet-wide deadline.
    offline_deadline: timedelta | None = None


@dataclass(frozen=True)
class Authorization:
    id: str
    holder: str
    kind: AuthorizationKind
    countries: tuple[str, ...]
    sites: tuple[str, ...]
    max_units: int | None
    max_tpp: float | None
    valid_from: date
    valid_until: date | None


@dataclass(frozen=True)
class Landmark:
    id: str
    lat: float
    lon: float
    public_key: bytes  # SPKI DER


@dataclass(frozen=True)
class Arrangement:
    country: str
    since: date


@dataclass(frozen=True)
class Registry:
    """A whole registry; ids are unique per kind and every reference resolves."""

    entities: tuple[Entity, ...] = ()
    sites: tuple[Site, ...] = ()
    authorizations: tuple[Authorization, ...] = ()
    landmarks: tuple[Landmark, ...] = ()
    arrangements: tuple[Arrangement, ...] = ()


@dataclass(frozen=True)
class RegistryVersion:
    """One `registry import`, kept so a reconciliation `--at` a past date uses the registry of
    that date: who imported it (the OS user or `--by`), when, and the SHA-256 of the file."""

    version: int  # 1, 2, ... in import order
    imported_at: datetime
    imported_by: str
    digest: bytes  # SHA-256 of the file bytes as read
    entities: int
    sites: int
    authorizations: int
    landmarks: int
    arrangements: int
