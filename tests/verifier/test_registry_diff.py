"""The pure registry diff and the import warnings that need --force, table-driven."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import pytest

from verifier.registry_diff import KindDiff, diff_registries, import_warnings
from verifier.registry_model import (
    Arrangement,
    Authorization,
    AuthorizationKind,
    Entity,
    Registry,
    Site,
    VeuStatus,
)

ACME = Entity("acme", "Acme", "US", "US", VeuStatus.UVEU)
BETA = Entity("beta", "Beta", "DE", "DE", VeuStatus.NONE)
FRA = Site("fra", "acme", "DE", 50.1, 8.7)
IAD = Site("iad", "acme", "US", 38.9, -77.4)
MUC = Site("muc", "beta", "DE", 48.1, 11.6)
LIC = Authorization(
    "L1", "acme", AuthorizationKind.LICENCE, ("DE",), (), 10, None, date(2026, 1, 1),
    date(2026, 6, 30),
)  # fmt: skip
OLD = Registry(
    entities=(ACME, BETA),
    sites=(FRA, IAD, MUC),
    authorizations=(LIC,),
    arrangements=(Arrangement("AE", date(2025, 3, 1)),),
)
TODAY = date(2026, 6, 30)  # L1's last valid day


def test_an_identical_registry_changes_nothing() -> None:
    assert diff_registries(OLD, OLD).empty
    assert import_warnings(OLD, OLD, {"fra": 8, "muc": 1}, date(2027, 1, 1)) == []


def test_the_diff_names_added_removed_and_changed_ids_per_kind() -> None:
    new = Registry(
        entities=(ACME,),
        sites=(replace(FRA, lat=50.2), IAD, Site("ams", "acme", "NL", 52.4, 4.9)),
        authorizations=(LIC,),
        arrangements=(Arrangement("AE", date(2025, 4, 1)),),
    )
    diff = diff_registries(OLD, new)
    assert diff.of("entities") == KindDiff("entities", removed=("beta",))
    assert diff.of("sites") == KindDiff("sites", ("ams",), ("muc",), ("fra",))
    assert diff.of("authorizations").empty and diff.of("landmarks").empty
    assert diff.of("arrangements") == KindDiff(
        "arrangements", added=("AE@2025-04-01",), removed=("AE@2025-03-01",)
    )


@pytest.mark.parametrize(
    ("new", "held", "today", "expected"),
    [
        # muc (beta's only site) goes with beta: 3 GPUs held there, warned for both.
        (
            Registry((ACME,), (FRA, IAD), (LIC,)),
            {"muc": 3, "fra": 5},
            TODAY,
            ["site muc is removed but holds 3 GPU(s)",
             "entity beta is removed but its sites hold 3 GPU(s)"],
        ),
        # A site removed that holds nothing needs no force.
        (Registry((ACME, BETA), (FRA, MUC), (LIC,)), {"fra": 5}, TODAY, []),
        # A changed licence on its last valid day is still valid ...
        (Registry((ACME, BETA), (FRA, IAD, MUC), (replace(LIC, max_units=20),)), {}, TODAY, []),
        # ... and expired the day after.
        (
            Registry((ACME, BETA), (FRA, IAD, MUC), (replace(LIC, max_units=20),)),
            {},
            date(2026, 7, 1),
            [("authorization L1 expired on 2026-06-30 (valid until the end of that day; "
             "today is 2026-07-01)")],
        ),
        # An expired licence the stored registry already had, unchanged, is not brought again.
        (OLD, {}, date(2026, 7, 1), []),
        # A new licence without an end never expires.
        (
            Registry((ACME, BETA), (FRA, IAD, MUC), (LIC, replace(LIC, id="L2", valid_until=None))),
            {},
            date(2030, 1, 1),
            [],
        ),
    ],
)  # fmt: skip
def test_import_warnings(
    new: Registry, held: dict[str, int], today: date, expected: list[str]
) -> None:
    assert import_warnings(OLD, new, held, today) == expected
