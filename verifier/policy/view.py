"""A policy pack as the `policy show` command prints it: a JSON-ready view (a stable contract:
keys are only ever added) and readable text, both marking every figure whose source is not
verified (docs/design.md §13)."""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

from verifier.policy.catalogue import CatalogueEntry, Source
from verifier.policy.model import PolicyPack

_DIGITS = 6


def exact_text(value: Fraction) -> str:
    """A fraction as a decimal when it is one ("608.5"), else as "N/D"."""
    for places in range(_DIGITS + 1):
        scaled = value * 10**places
        if scaled.denominator == 1:
            whole = str(abs(scaled.numerator)).rjust(places + 1, "0")
            sign = "-" if value < 0 else ""
            return sign + (whole if places == 0 else f"{whole[:-places]}.{whole[-places:]}")
    return f"{value.numerator}/{value.denominator}"


def approx_text(value: Fraction) -> str:
    """Two decimals, for people; the exact value is always shown beside it."""
    hundredths = math.floor(value * 100 + Fraction(1, 2))  # half up, whatever the sign
    sign, hundredths = ("-", -hundredths) if hundredths < 0 else ("", hundredths)
    return f"{sign}{hundredths // 100}.{hundredths % 100:02d}"


def percent_text(value: Fraction) -> str:
    return exact_text(value * 100) + "%"


def source_view(source: Source) -> dict[str, Any]:
    return {
        "source": source.ref,
        "source_label": source.label.value,
        "verified": source.verified,
        "note": source.note,
    }


def _range(first: Any, last: Any) -> dict[str, Any]:
    return {"valid_from": first.isoformat(), "valid_until": last and last.isoformat()}


def _hex(value: int | None) -> str | None:
    return None if value is None else f"0x{value:08X}"


def entry_view(entry: CatalogueEntry) -> dict[str, Any]:
    density = entry.performance_density
    return {
        "model": entry.model,
        "name": entry.name,
        "pci_device_id": _hex(entry.pci_device_id),
        "pci_subsystem_ids": [_hex(s) for s in entry.pci_subsystem_ids],
        "dense_tops": exact_text(entry.dense_tops),
        "bit_length": entry.bit_length,
        "dense_tpp": entry.dense_tpp,
        "die_area_mm2": None if entry.die_area_mm2 is None else exact_text(entry.die_area_mm2),
        "performance_density": None
        if density is None
        else {"exact": exact_text(density), "approx": approx_text(density)},
        "eccn": entry.eccn.value,
        "board_power_w": entry.board_power_w,
        "ids": source_view(entry.ids_source),
        **source_view(entry.source),
        "verified": entry.verified,
    }


def _share(value: Fraction) -> dict[str, str]:
    return {"fraction": f"{value.numerator}/{value.denominator}", "percent": percent_text(value)}


def pack_view(pack: PolicyPack) -> dict[str, Any]:
    """The whole pack as JSON-ready values; PCI ids as hex strings, fractions as text."""
    t, cap, uveu, th = pack.tiers, pack.country_cap, pack.uveu, pack.thresholds
    return {
        "id": pack.id,
        "title": pack.title,
        "effective_from": pack.effective_from.isoformat(),
        "effective_until": pack.effective_until and pack.effective_until.isoformat(),
        "origin": pack.origin,
        **source_view(pack.source),
        "milestones": [
            {"date": m.date.isoformat(), "what": m.what, **source_view(m.source)}
            for m in pack.milestones
        ],
        "tiers": {
            "default": t.default,
            "licence_required": list(t.licence_required),
            "descriptions": {str(n): text for n, text in enumerate(t.descriptions, 1)},
            "listings": [
                {"tier": x.tier, "countries": list(x.countries),
                 **_range(x.valid_from, x.valid_until), **source_view(x.source)}
                for x in t.listings
            ],
            "aliases": [
                {"country": a.country, "resolves_to": a.resolves_to,
                 "valid_from": a.valid_from.isoformat(), **source_view(a.source)}
                for a in t.aliases
            ],
            **source_view(t.source),
        },
        "country_cap": cap and {
            "tier": cap.tier, "tpp": cap.tpp, "tpp_with_arrangement": cap.tpp_with_arrangement,
            **_range(cap.valid_from, cap.valid_until), **source_view(cap.source),
        },
        "lpp": pack.lpp and {
            "tpp_per_consignee_per_year": pack.lpp.tpp_per_consignee_per_year,
            "counts_against_country_cap": pack.lpp.counts_against_country_cap,
            **source_view(pack.lpp.source),
        },
        "aia": pack.aia and {
            "reporting_threshold_tpp": pack.aia.reporting_threshold_tpp,
            **source_view(pack.aia.source),
        },
        "uveu": uveu and {
            "tier1_min_share": _share(uveu.tier1_min_share),
            "tier2_country_max_share": _share(uveu.tier2_country_max_share),
            "us_min_share_if_us_hq": _share(uveu.us_min_share_if_us_hq),
            **source_view(uveu.source),
        },
        "nveu_allocation": [
            {"valid_from": s.valid_from.isoformat(), "cumulative_tpp": s.cumulative_tpp,
             **source_view(s.source)}
            for s in pack.nveu
        ],
        "holders": [
            {"kind": h.kind.value, "rules": list(h.rules), "safeguards": list(h.safeguards),
             **source_view(h.source)}
            for h in pack.holders
        ],
        "thresholds": {
            "a_tpp": th.a_tpp, "a_density_tpp": th.a_density_tpp,
            "a_density": exact_text(th.a_density), "b_tpp": th.b_tpp,
            "b_density": exact_text(th.b_density), "b_alt_tpp": th.b_alt_tpp,
            "b_alt_density": exact_text(th.b_alt_density), **source_view(th.source),
        },
        "catalogue": [entry_view(e) for e in pack.catalogue.entries],
        "unknown_model_tpp": pack.catalogue.max_tpp,
    }  # fmt: skip
