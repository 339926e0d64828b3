"""A policy pack as frozen values, and the pure questions the compliance rules ask of it
(docs/design.md §13): a country's tier on a date, the country cap, the NVEU allocation, which
rules and safeguards apply to a kind of holder, and which pack is in force on a date.

Packs are data (verifier/policy/packs/*.toml), read by `verifier.policy.load`. Numbers are exact:
TPP as integers, shares as `Fraction`s, dates as `datetime.date`; a day range includes both its
first and its last day.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from fractions import Fraction
from typing import Final

from attest.errors import PolicyNotFoundError
from verifier.policy.catalogue import Catalogue, Source, Thresholds
from verifier.registry_model import VeuStatus

#: The compliance rule ids a pack can switch on per kind of holder (docs/design.md §5).
COMPLIANCE_RULES: Final = (
    "tier3-destination",
    "tier3-headquarters",
    "country-cap-exceeded",
    "uveu-tier2-share",
    "uveu-tier1-share",
    "uveu-us-share",
    "nveu-allocation-exceeded",
    "licence-exceeded",
    "licence-expired",
    "unlicensed-gpu",
    "power-implausible",
    "safeguard-failed",
    "unknown-gpu-model",
)

#: The posture checks agents attest (agent/posture.py names them; tests keep the two equal).
SAFEGUARD_CHECKS: Final = (
    "secure-boot",
    "kernel-lockdown",
    "state-dir-encrypted",
    "firewall-ruleset",
    "ssh-root-login-disabled",
    "ssh-password-auth-disabled",
    "audit-daemon-running",
    "clock-synchronized",
    "agent-key-file",
    "nvidia-persistence-mode",
    "confidential-computing",
)

TIERS: Final = (1, 2, 3)


def _covers(first: date, last: date | None, on: date) -> bool:
    return first <= on and (last is None or on <= last)


@dataclass(frozen=True)
class TierListing:
    """Countries in one tier from `valid_from` to `valid_until` (inclusive; None: open)."""

    tier: int
    countries: tuple[str, ...]
    valid_from: date
    valid_until: date | None
    source: Source

    def covers(self, on: date) -> bool:
        return _covers(self.valid_from, self.valid_until, on)


@dataclass(frozen=True)
class CountryAlias:
    """A destination treated as another for country groups (Hong Kong as China)."""

    country: str
    resolves_to: str
    valid_from: date
    source: Source


@dataclass(frozen=True)
class Tiers:
    default: int  # the tier of every country no listing names on a date
    licence_required: tuple[int, ...]  # tiers whose destinations need an authorization
    descriptions: tuple[str, str, str]  # what tiers 1, 2 and 3 mean in this pack
    listings: tuple[TierListing, ...]
    aliases: tuple[CountryAlias, ...]
    source: Source


@dataclass(frozen=True)
class CountryCap:
    """The cumulative TPP a capped country may hold without VEU authorization, and the doubled
    figure under a government-to-government arrangement."""

    tier: int
    tpp: int
    tpp_with_arrangement: int
    valid_from: date
    valid_until: date | None
    source: Source


@dataclass(frozen=True)
class LppLimit:
    tpp_per_consignee_per_year: int
    counts_against_country_cap: bool
    source: Source


@dataclass(frozen=True)
class AiaReporting:
    reporting_threshold_tpp: int
    source: Source


@dataclass(frozen=True)
class UveuShares:
    tier1_min_share: Fraction  # at least this share of compute in Tier 1
    tier2_country_max_share: Fraction  # at most this share in any one Tier-2 country
    us_min_share_if_us_hq: Fraction  # a US-headquartered UVEU: at least this share in the US
    source: Source


@dataclass(frozen=True)
class NveuStep:
    """From `valid_from` on, an NVEU may hold `cumulative_tpp` in its country."""

    valid_from: date
    cumulative_tpp: int
    source: Source


@dataclass(frozen=True)
class HolderRules:
    kind: VeuStatus
    rules: tuple[str, ...]
    safeguards: tuple[str, ...]
    source: Source


@dataclass(frozen=True)
class Milestone:
    date: date
    what: str
    source: Source


@dataclass(frozen=True)
class PolicyPack:
    id: str
    title: str
    effective_from: date
    effective_until: date | None
    source: Source
    origin: str  # "built-in" or the file it was read from
    milestones: tuple[Milestone, ...]
    tiers: Tiers
    country_cap: CountryCap | None
    lpp: LppLimit | None
    aia: AiaReporting | None
    uveu: UveuShares | None
    nveu: tuple[NveuStep, ...]  # ascending valid_from
    holders: tuple[HolderRules, ...]
    thresholds: Thresholds
    catalogue: Catalogue

    def in_force(self, on: date) -> bool:
        return _covers(self.effective_from, self.effective_until, on)

    def resolve_country(self, country: str, on: date) -> str:
        """The country whose tier applies (Hong Kong -> China from the alias's date)."""
        for alias in self.tiers.aliases:
            if alias.country == country and alias.valid_from <= on:
                return alias.resolves_to
        return country

    def tier_of(self, country: str, on: date) -> int:
        """The tier of a destination or headquarters country on a date."""
        resolved = self.resolve_country(country, on)
        for listing in self.tiers.listings:
            if resolved in listing.countries and listing.covers(on):
                return listing.tier
        return self.tiers.default

    def licence_required(self, country: str, on: date) -> bool:
        return self.tier_of(country, on) in self.tiers.licence_required

    def country_cap_tpp(self, country: str, on: date, *, arrangement: bool) -> int | None:
        """The cap on `country`'s non-VEU holdings on a date; None when it is not capped."""
        cap = self.country_cap
        if cap is None or not _covers(cap.valid_from, cap.valid_until, on):
            return None
        if self.tier_of(country, on) != cap.tier:
            return None
        return cap.tpp_with_arrangement if arrangement else cap.tpp

    def nveu_allocation_tpp(self, on: date) -> int | None:
        """An NVEU's cumulative allocation on a date (0 before the first step); None when the
        pack has no NVEU allocation at all."""
        if not self.nveu:
            return None
        reached = [step.cumulative_tpp for step in self.nveu if step.valid_from <= on]
        return reached[-1] if reached else 0

    def holder_rules(self, kind: VeuStatus) -> HolderRules:
        """The rules and safeguards for a kind of holder (the pack names every kind)."""
        return next(h for h in self.holders if h.kind is kind)


def pack_in_force(packs: Iterable[PolicyPack], on: date) -> PolicyPack:
    """The pack in force on `on`: of those whose effective range covers it, the one that took
    effect last (a later pack supersedes an open-ended earlier one). Raises PolicyNotFoundError
    when none covers the date or two took effect on the same day."""
    covering = [p for p in packs if p.in_force(on)]
    if not covering:
        raise PolicyNotFoundError(f"no policy pack is in force on {on.isoformat()}")
    latest = max(p.effective_from for p in covering)
    chosen = [p for p in covering if p.effective_from == latest]
    if len(chosen) > 1:
        names = ", ".join(sorted(p.id for p in chosen))
        raise PolicyNotFoundError(
            f"policy packs {names} all take effect on {latest.isoformat()}: name one with --policy"
        )
    return chosen[0]
