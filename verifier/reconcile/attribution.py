"""Which authorization carries which controlled GPUs (docs/design.md §14).

A holder's GPUs at a site may fall within the scope of several of its authorizations (one for
the site, one for the whole country). They are attributed most specific first: site-scoped
authorizations before country-scoped ones, then by id; each takes GPUs up to what its
`max_units` and `max_tpp` still allow, and the last candidate takes the rest, so an excess shows
on the broadest authorization. Lots are visited in (site, model) order, so the result never
depends on the order rows arrive in. GPUs no valid authorization covers are attributed to the
holder's expired authorization for that scope if it has one (`licence-expired`), else to none
(`unlicensed-gpu`, when the pack requires a licence).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date

from verifier.reconcile.tally import Lot
from verifier.registry_model import Authorization


@dataclass(frozen=True, slots=True)
class Piece:
    """`units` GPUs of a lot and the authorization they are held under (None: no authorization
    valid on the date or expired before it covers them)."""

    lot: Lot
    units: int
    auth: Authorization | None
    expired: bool = False


def state_on(auth: Authorization, on: date) -> str:
    """'valid' from valid_from through valid_until (inclusive), 'expired' after it."""
    if on < auth.valid_from:
        return "not-yet-valid"
    if auth.valid_until is not None and auth.valid_until < on:
        return "expired"
    return "valid"


def tpp_limit(auth: Authorization) -> int | None:
    """The registry's max_tpp as whole TPP: holdings are integers, so `held <= max_tpp` is
    `held <= floor(max_tpp)` exactly (int() truncates a non-negative float, no rounding)."""
    return None if auth.max_tpp is None else int(auth.max_tpp)


def covers(auth: Authorization, lot: Lot, resolve: Callable[[str], str]) -> bool:
    if lot.site_id in auth.sites:
        return True
    if lot.site is None:
        return False
    return lot.site.country in auth.countries or resolve(lot.site.country) in auth.countries


def _specificity(auth: Authorization, lot: Lot) -> tuple[int, str]:
    return (0 if lot.site_id in auth.sites else 1, auth.id)


class _Headroom:
    def __init__(self) -> None:
        self.used: dict[str, tuple[int, int]] = {}

    def fit(self, auth: Authorization, unit_tpp: int) -> int:
        """How many more GPUs of `unit_tpp` the authorization allows (may be huge)."""
        units, tpp = self.used.get(auth.id, (0, 0))
        room = [1 << 62]
        if auth.max_units is not None:
            room.append(auth.max_units - units)
        limit = tpp_limit(auth)
        if limit is not None and unit_tpp > 0:
            room.append((limit - tpp) // unit_tpp)
        return max(0, min(room))

    def take(self, auth: Authorization, lot: Lot, units: int) -> None:
        held, tpp = self.used.get(auth.id, (0, 0))
        self.used[auth.id] = (held + units, tpp + units * lot.unit_tpp)


def _fill(lot: Lot, candidates: Sequence[Authorization], room: _Headroom) -> list[Piece]:
    pieces = []
    remaining = lot.count
    for i, auth in enumerate(candidates):
        last = i == len(candidates) - 1
        take = remaining if last else min(remaining, room.fit(auth, lot.unit_tpp))
        if take > 0:
            room.take(auth, lot, take)
            pieces.append(Piece(lot, take, auth))
            remaining -= take
    return pieces


def attribute(
    lots: Iterable[Lot],
    authorizations: Iterable[Authorization],
    on: date,
    resolve: Callable[[str], str],
) -> list[Piece]:
    """The controlled GPUs of `lots`, split over the authorizations that carry them."""
    by_holder: dict[str, list[Authorization]] = {}
    for auth in authorizations:
        by_holder.setdefault(auth.holder, []).append(auth)
    room = _Headroom()
    pieces: list[Piece] = []
    for lot in sorted(lots, key=lambda lot: (lot.site_id, lot.model)):
        if not lot.controlled or lot.count <= 0:
            continue
        mine = [] if lot.entity is None else by_holder.get(lot.entity.id, [])
        scoped = sorted(
            (a for a in mine if covers(a, lot, resolve)), key=lambda a: _specificity(a, lot)
        )
        valid = [a for a in scoped if state_on(a, on) == "valid"]
        if valid:
            pieces.extend(_fill(lot, valid, room))
            continue
        expired = [a for a in scoped if state_on(a, on) == "expired"]
        if expired:
            pieces.append(Piece(lot, lot.count, expired[0], expired=True))
        else:
            pieces.append(Piece(lot, lot.count, None))
    return pieces
