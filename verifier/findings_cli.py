"""`gpu-attest-verifier findings ack ID --by NAME --reason TEXT`: acknowledge an open finding.

An acknowledged finding stays acknowledged while its condition holds (re-raising it refreshes
it in place); it resolves by itself when the condition clears, and if it then recurs it opens
again as a new finding with a new id (docs/design.md §5). Acknowledging twice is idempotent:
the first acknowledgment (who, when, why) stands and the command says so. An unknown id, or a
resolved finding, is refused with exit code 1 (REFUSED).
"""

from __future__ import annotations

import argparse
from datetime import UTC, date, datetime
from functools import cache
from typing import Any

from attest.errors import PolicyNotFoundError
from attest.text import escape
from verifier.exits import VerifierExit
from verifier.model import FindingStatus, MissingOnHost
from verifier.policy import Catalogue, builtin_packs, pack_in_force
from verifier.store.api import Store
from verifier.views import finding_line, finding_view, print_json


def add_findings_ack_parser(
    findings: argparse.ArgumentParser, common: argparse.ArgumentParser
) -> None:
    """`findings ack` under the `findings` listing (which keeps working without an action)."""
    actions = findings.add_subparsers(dest="action", required=False)
    ack = actions.add_parser("ack", parents=[common], help="acknowledge an open finding (audited)")
    ack.add_argument("id", type=_finding_id, help="the finding's id (`findings` shows it)")
    ack.add_argument("--by", required=True, help="who acknowledges it")
    ack.add_argument("--reason", required=True, help="why (recorded and audited)")
    ack.add_argument("--json", action="store_true")


def _finding_id(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a finding id: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"not a finding id: {text!r}")
    return value


def cmd_findings_ack(args: argparse.Namespace, store: Store) -> int:
    before = store.get_finding(args.id)
    finding = store.acknowledge_finding(args.id, args.by, args.reason, datetime.now(UTC))
    again = before is not None and before.status is FindingStatus.ACKNOWLEDGED
    if args.json:
        view: dict[str, Any] = finding_view(finding)
        view["already_acknowledged"] = again
        print_json(view)
        return VerifierExit.OK
    if again:
        print("already acknowledged (by the first acknowledgment, which stands):")
    print(finding_line(finding))
    return VerifierExit.OK


@cache
def fleet_catalogue(on: date) -> Catalogue | None:
    """The GPU catalogue of the built-in pack in force on `on` (what `fleet` classifies GPUs
    by); None when no pack covers the date, and every model shows as unknown."""
    try:
        return pack_in_force(builtin_packs(), on).catalogue
    except PolicyNotFoundError:
        return None


def missing_line(group: MissingOnHost) -> str:
    """One host's open gpu-missing findings on one line: the count and the first few GPUs."""
    shown = ", ".join(f"{escape(uuid)} (id={fid})" for fid, uuid in group.first)
    more = ", ..." if group.count > len(group.first) else ""
    return (
        f"[high] gpu-missing  host={escape(group.hostname or group.agent_id)}  "
        f"site={escape(group.site_id)}  agent={escape(group.agent_id)}: "
        f"{group.count} GPU{'s' if group.count != 1 else ''} missing: {shown}{more}"
    )
