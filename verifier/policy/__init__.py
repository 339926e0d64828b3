"""Policy packs: versioned, dated compliance data (country tiers, caps, shares, allocations, the
GPU model catalogue, which rules apply to which holder) and the pure questions asked of them
(docs/design.md §13). No I/O beyond reading the pack files."""

from verifier.policy.catalogue import (
    Catalogue,
    CatalogueEntry,
    Eccn,
    Source,
    SourceLabel,
    Thresholds,
    UnknownModel,
    classify,
)
from verifier.policy.load import builtin_packs, find_pack, load_pack, parse_pack
from verifier.policy.model import COMPLIANCE_RULES, PolicyPack, pack_in_force

__all__ = [
    "COMPLIANCE_RULES",
    "Catalogue",
    "CatalogueEntry",
    "Eccn",
    "PolicyPack",
    "Source",
    "SourceLabel",
    "Thresholds",
    "UnknownModel",
    "builtin_packs",
    "classify",
    "find_pack",
    "load_pack",
    "pack_in_force",
    "parse_pack",
]
