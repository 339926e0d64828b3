"""`gpu-attest-verifier registry ...`: the compliance registry the fleet is judged against
(docs/design.md §6). Every import is kept as a version; none needs a running server.

    registry import FILE [--dry-run] [--force] [--by NAME] [--json]
                                       replace the registry (a new version, audited); --dry-run
                                       shows the change by id and stores nothing; a change that
                                       orphans held GPUs or brings an expired authorization
                                       warns and needs --force (exit 1 without it)
    registry show [--at DATE] [--json] the current registry, or the one in force at DATE
    registry history [--json]          every imported version: who, when, SHA-256
"""

from __future__ import annotations

import argparse
import base64
import getpass
import os
import sys
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from attest import tomlconf as tc
from attest.errors import RegistryChangeRefusedError
from attest.text import escape
from attest.tomlconf import format_duration
from verifier.exits import VerifierExit
from verifier.registry import read_registry_file
from verifier.registry_diff import KINDS, RegistryDiff, diff_registries, import_warnings
from verifier.registry_model import Registry, RegistryVersion
from verifier.store.api import Store
from verifier.views import jsonable, print_json


def parse_day(text: str) -> date:
    """A --at argument: an ISO date (YYYY-MM-DD), a usage error otherwise."""
    try:
        return tc.parse_day(text)
    except tc.Invalid as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_registry_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    registry = sub.add_parser("registry", help="compliance registry").add_subparsers(
        dest="action", required=True
    )
    imp = registry.add_parser(
        "import", parents=[common], help="replace the registry from TOML (kept as a version)"
    )
    imp.add_argument("file", type=Path)
    imp.add_argument("--dry-run", action="store_true", help="show the change, store nothing")
    imp.add_argument(
        "--force", action="store_true",
        help="import although sites or entities holding GPUs go, or an authorization expired",
    )  # fmt: skip
    imp.add_argument("--by", help="who imports it (default: the OS user running the command)")
    imp.add_argument("--json", action="store_true")
    show = registry.add_parser("show", parents=[common], help="print the registry")
    show.add_argument("--at", type=parse_day, help="the registry in force at the end of DATE")
    show.add_argument("--json", action="store_true")
    history = registry.add_parser("history", parents=[common], help="list imported versions")
    history.add_argument("--json", action="store_true")


def run_registry_command(args: argparse.Namespace, store: Store) -> int:
    if args.action == "import":
        return _import(args, store)
    if args.action == "show":
        return _show(store.load_registry(args.at), args.json)
    return _history(store.registry_history(), args.json)


def _importer(named: str | None) -> str:
    if named:
        return named
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (a bare container)
        return f"uid {os.getuid()}"


def _import(args: argparse.Namespace, store: Store) -> int:
    new, raw = read_registry_file(args.file)
    old = store.load_registry()
    diff = diff_registries(old, new)
    warnings = import_warnings(old, new, store.present_gpus_by_site(), datetime.now(UTC).date())
    view: dict[str, Any] = {
        "file": str(args.file),
        "dry_run": args.dry_run,
        "changes": _diff_view(diff),
        "warnings": warnings,
        "needs_force": bool(warnings),
    }
    for line in warnings:
        print(f"gpu-attest-verifier: warning: {escape(line)}", file=sys.stderr)
    if args.dry_run:
        if args.json:
            print_json(view)
        else:
            _print_diff(diff)
            print("dry run: nothing stored" + ("; importing needs --force" if warnings else ""))
        return VerifierExit.OK
    if warnings and not args.force:
        raise RegistryChangeRefusedError(
            f"{len(warnings)} warning(s) above: nothing imported; check the change with "
            "--dry-run and import with --force if it is meant"
        )
    version = store.import_registry(new, by=_importer(args.by), source=raw)
    if args.json:
        print_json({**view, "version": version, "forced": bool(warnings)})
        return VerifierExit.OK
    counts = ", ".join(f"{len(getattr(new, kind))} {kind}" for kind in KINDS[:4])
    print(f"imported version {version}: {counts}")
    _print_diff(diff)
    return VerifierExit.OK


def _diff_view(diff: RegistryDiff) -> dict[str, dict[str, list[str]]]:
    return {
        k.kind: {"added": list(k.added), "removed": list(k.removed), "changed": list(k.changed)}
        for k in diff.kinds
    }


def _print_diff(diff: RegistryDiff) -> None:
    if diff.empty:
        print("no change")
        return
    for k in diff.kinds:
        if k.empty:
            continue
        print(f"{k.kind}: {len(k.added)} added, {len(k.removed)} removed, {len(k.changed)} changed")
        for mark, ids in (("+", k.added), ("-", k.removed), ("~", k.changed)):
            for item in ids:
                print(f"  {mark} {escape(item)}")


def registry_view(registry: Registry) -> dict[str, Any]:
    """The registry as JSON values: dates ISO, landmark keys base64 SPKI DER, a site's
    offline deadline as the file writes it ("7d") or null."""
    view: dict[str, Any] = jsonable(
        Registry(
            registry.entities,
            tuple(replace(s, offline_deadline=None) for s in registry.sites),
            registry.authorizations,
            registry.landmarks,
            registry.arrangements,
        )
    )
    for site, item in zip(registry.sites, view["sites"], strict=True):
        deadline = site.offline_deadline
        item["offline_deadline"] = None if deadline is None else format_duration(deadline)
    for landmark in view["landmarks"]:
        raw = bytes.fromhex(landmark["public_key"])
        landmark["public_key"] = base64.b64encode(raw).decode("ascii")
    return view


def _show(registry: Registry, as_json: bool) -> int:
    view = registry_view(registry)
    if as_json:
        print_json(view)
        return VerifierExit.OK
    for kind in KINDS:
        print(f"{kind}: {len(view[kind])}")
        for item in view[kind]:
            print(f"  {escape(str(item.get('id', item.get('country'))))}")
    return VerifierExit.OK


def version_view(v: RegistryVersion) -> dict[str, Any]:
    view: dict[str, Any] = jsonable(v)
    view["sha256"] = view.pop("digest")
    return view


def _history(versions: list[RegistryVersion], as_json: bool) -> int:
    if as_json:
        print_json([version_view(v) for v in versions])
        return VerifierExit.OK
    if not versions:
        print("no registry imported")
    for v in versions:
        print(
            f"version {v.version}  {jsonable(v.imported_at)}  by {escape(v.imported_by)}  "
            f"sha256 {v.digest.hex()}  {v.entities} entities, {v.sites} sites, "
            f"{v.authorizations} authorizations"
        )
    return VerifierExit.OK
