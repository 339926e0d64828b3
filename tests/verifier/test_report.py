"""The pure parts of reports: periods, coverage days, the sample choice."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from attest.report_verify import sample_index
from verifier.report import Period, coverage_days, parse_period, period_between


@pytest.mark.parametrize(
    ("text", "start", "end"),
    [
        ("2026H1", date(2026, 1, 1), date(2026, 6, 30)),
        ("2026H2", date(2026, 7, 1), date(2026, 12, 31)),
        ("2026Q1", date(2026, 1, 1), date(2026, 3, 31)),
        ("2026Q3", date(2026, 7, 1), date(2026, 9, 30)),
        ("2028-02", date(2028, 2, 1), date(2028, 2, 29)),
        ("2026-07", date(2026, 7, 1), date(2026, 7, 31)),
    ],
)
def test_periods(text: str, start: date, end: date) -> None:
    assert parse_period(text) == Period(text, start, end)


@pytest.mark.parametrize("text", ["2026H3", "2026Q5", "2026-13", "2026-00", "26H1", "2026h1", ""])
def test_not_periods(text: str) -> None:
    with pytest.raises(ValueError, match="is not a period"):
        parse_period(text)


def test_a_period_that_ends_before_it_starts_is_refused() -> None:
    with pytest.raises(ValueError, match="before it starts"):
        period_between(date(2026, 2, 1), date(2026, 1, 31))


@given(st.dates(date(2025, 1, 1), date(2030, 1, 1)), st.integers(0, 400))
def test_coverage_days_end_on_the_day_and_stay_in_the_period(start: date, days: int) -> None:
    period = Period("p", start, date(2031, 1, 1))
    as_of = date.fromordinal(start.toordinal() + days)
    found = coverage_days(period, as_of)
    assert found[-1] == as_of and found == sorted(set(found))
    assert all(start <= d <= as_of for d in found) and 1 <= len(found) <= 7


@given(st.binary(min_size=32, max_size=32), st.lists(st.integers(0, 10**9), min_size=1))
def test_the_sample_is_a_candidate_and_ignores_their_order(root: bytes, found: list[int]) -> None:
    chosen = sample_index(root, "site-a", found)
    assert chosen in found
    assert sample_index(root, "site-a", list(reversed(found))) == chosen


def test_the_root_picks_the_sample() -> None:
    candidates = list(range(64))
    picks = {sample_index(bytes([i]) * 32, "site-a", candidates) for i in range(32)}
    assert len(picks) > 8  # not a fixed choice the verifier could steer
