"""The compliance registry as frozen values (docs/design.md §6): entities, sites, authorizations,
landmarks and government-to-government arrangements.

Parsing the TOML file lives in `verifier.registry`; these classes are what the parser returns,
what the store keeps and what the compliance rules read.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import date


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
