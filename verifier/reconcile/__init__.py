"""The reconciliation engine (docs/design.md §14): every compliance rule of §5 that inventory
can decide, as a pure function of aggregated holdings, agent postures, the registry and a
policy pack on a date. No I/O: the store aggregates the rows, the CLI prints the result."""

from verifier.reconcile.context import SEVERITY
from verifier.reconcile.engine import reconcile
from verifier.reconcile.model import (
    AuthorizationUsage,
    CountryTotals,
    HoldingRow,
    PostureRow,
    Reconciliation,
    Totals,
)

__all__ = [
    "SEVERITY",
    "AuthorizationUsage",
    "CountryTotals",
    "HoldingRow",
    "PostureRow",
    "Reconciliation",
    "Totals",
    "reconcile",
]
