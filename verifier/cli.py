"""`gpu-attest-verifier`: serve, tokens, agents, fleet, findings, ingest, registry, log, CA export,
landmark.

Exit codes: verifier/exits.py (`VerifierExit`), listed by `--help`.

`--json` output is a stable contract: keys are only ever added, never renamed or removed.
Listings (agents, fleet, findings) are streamed page by page: after exit code 4 the output
is incomplete.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

from attest import tomlconf
from attest.errors import AttestError, SiteUnknownError, StoreError
from attest.logfmt import setup_logging
from attest.text import escape
from verifier import enroll, locate, location, pipeline
from verifier.cli_state import config_source, describe_source, log, prepare_state
from verifier.compliance import pack_configured
from verifier.compliance_cli import add_compliance_parsers, run_compliance_command
from verifier.config import MAX_WORKERS, VerifierConfig, load_config
from verifier.exits import VerifierExit, exit_code_for
from verifier.findings import GPU_MISSING
from verifier.findings_cli import (
    add_findings_ack_parser,
    cmd_findings_ack,
    fleet_catalogue,
    missing_line,
)
from verifier.landmark_cli import add_landmark_parser, run_landmark_command
from verifier.log_cli import add_log_parser, run_log_command
from verifier.model import Finding, FindingStatus, HostFleet, Severity
from verifier.policy_cli import add_policy_parser, run_policy_command
from verifier.registry_cli import add_registry_parser, run_registry_command
from verifier.registry_model import Registry
from verifier.report_cli import add_report_parser, run_report_command
from verifier.store.api import Store
from verifier.views import (
    agent_line,
    agent_view,
    finding_line,
    finding_view,
    host_lines,
    host_view,
    jsonable,
    print_json,
    write_json_array,
)
from verifier.workerproc import WorkerRole


def parse_duration(text: str) -> timedelta:
    """A duration argument ('90s', '15m', '24h', '7d': attest.tomlconf.parse_duration) for
    argparse, which shows the message of an ArgumentTypeError."""
    try:
        return tomlconf.parse_duration(text)
    except tomlconf.Invalid as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_ttl(text: str) -> timedelta:
    """A token lifetime: a duration from 1s to enroll.MAX_TOKEN_TTL (a usage error otherwise,
    before anything is stored)."""
    ttl = parse_duration(text)
    if not timedelta(0) < ttl <= enroll.MAX_TOKEN_TTL:
        raise argparse.ArgumentTypeError(
            f"{text!r}: a token lifetime must be positive and at most {enroll.MAX_TOKEN_TTL.days}d"
        )
    return ttl


def _worker_count(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"{text!r}: a number of workers from 1 to {MAX_WORKERS}")
    return int(text)


_SEVERITY_RANK = {severity: rank for rank, severity in enumerate(reversed(Severity))}
T = TypeVar("T")


def _peek(items: Iterator[T]) -> tuple[bool, Iterator[T]]:
    """Whether `items` yields anything, and an iterator over all of it (nothing consumed)."""
    first = next(items, None)
    if first is None:
        return False, iter(())
    return True, itertools.chain((first,), items)


def _now() -> datetime:
    return datetime.now(UTC)


def _store(config: VerifierConfig) -> Store:
    from verifier.server import open_configured_store  # noqa: PLC0415 - grpc only for serve

    return open_configured_store(config)


def cmd_serve(args: argparse.Namespace, config: VerifierConfig) -> int:
    from verifier import supervisor  # noqa: PLC0415

    plain = args.insecure_plaintext
    if args.worker_index is not None:  # started by the supervisor (verifier/supervisor.py)
        role = WorkerRole(args.worker_index, args.workers, args.worker_notify_fd)
        return _serve_one(config, plain, role)
    log.info("%s", describe_source(config, config_source(args.config)))
    count = supervisor.worker_count(config, args.workers)
    if count == 1:
        return _serve_one(config, plain, None)
    prefix = [sys.executable, "-m", "verifier.cli"]
    prefix += ["--config", str(args.config)] if args.config is not None else []
    prefix += ["--log-json"] if args.log_json else []
    argv = supervisor.worker_argv(prefix, plain)
    return supervisor.run_supervisor(config, count, argv, insecure_plaintext=plain)


def _serve_one(config: VerifierConfig, plain: bool, role: WorkerRole | None) -> int:
    from verifier.server import run_until_signalled  # noqa: PLC0415 - grpc only for serve

    return asyncio.run(run_until_signalled(config, insecure_plaintext=plain, role=role))


def _check_token_site(store: Store, site_id: str) -> None:
    """The registry is the truth a token's site is checked against; before any import there
    is nothing to check against (a deployment's first steps), so it only warns."""
    registry = store.load_registry()
    if any(site.id == site_id for site in registry.sites):
        return
    if registry == Registry() and not store.registry_history():
        print(
            f"gpu-attest-verifier: warning: no registry imported yet, site {site_id!r} "
            "is not checked against it",
            file=sys.stderr,
        )
        return
    raise SiteUnknownError(
        f"unknown site {site_id!r}: not in the registry (`registry show` lists its sites)"
    )


def cmd_token_create(args: argparse.Namespace, store: Store) -> int:
    _check_token_site(store, args.site)
    now = _now()
    token = enroll.create_token(store, args.site, args.ttl, now)
    # The token is stored: from here on nothing may fail before it is shown (it was a
    # datetime that json could not serialize).
    if args.json:
        print_json({"token": token, "site_id": args.site, "expires_at": jsonable(now + args.ttl)})
    else:
        print(token)
    return VerifierExit.OK


def cmd_agents(args: argparse.Namespace, store: Store) -> int:
    any_agent, agents = _peek(store.iter_agents())
    if args.json:
        write_json_array(agent_view(a) for a in agents)
        return VerifierExit.OK
    if not any_agent:
        print("no agents enrolled")
    for a in agents:
        print(agent_line(a))
    return VerifierExit.OK


def cmd_agent_revoke(args: argparse.Namespace, store: Store) -> int:
    agent = enroll.revoke(store, args.agent, _now(), args.reason)
    print(f"revoked {agent.agent_id}")
    return VerifierExit.OK


def cmd_fleet(args: argparse.Namespace, store: Store, config: VerifierConfig) -> int:
    now = _now()
    # Each site's location from the landmark statements `serve` has checked (docs/design.md
    # §16); read-only, so statements not checked yet count from the next pass on.
    try:
        pack = pack_configured(config.policy, now.date())
    except AttestError:  # `reconcile` says what is wrong with the pack; `fleet` still lists
        pack = None
    clearance = None if pack is None else location.tier3_clearance(pack, now.date())
    registry = store.load_registry()
    deadline = config.fleet.location_deadline
    sites = {s.site_id: s for s in locate.judge_at(store, registry, now, deadline, clearance)}
    any_host, hosts = _peek(store.iter_fleet(args.site))
    # An empty answer for a site: known (in the registry) but empty, or a mistyped name.
    known = () if any_host or args.site is None else {s.id for s in store.load_registry().sites}
    if args.site is not None and not any_host and args.site not in known:
        raise SiteUnknownError(
            f"unknown site {args.site!r}: no agent enrolled there and not in the registry"
        )
    if args.json:
        catalogue = fleet_catalogue(now.date())

        def view(host: HostFleet) -> dict[str, object]:
            judged = sites.get(host.agent.site_id)
            where = None if judged is None else location.as_json(judged)
            return {**host_view(host, catalogue), "location": where}

        write_json_array(view(h) for h in hosts)
        return VerifierExit.OK
    if not any_host:
        print(f"no hosts at site {args.site}" if args.site else "no hosts have reported")
    for host in hosts:
        for line in host_lines(host):
            print(line)
    for site_id, judged in sorted(sites.items()):
        if args.site is None or site_id == args.site:
            print(f"location {escape(site_id)}: {judged.status}: {escape(judged.reason)}")
    return VerifierExit.OK


def cmd_findings(args: argparse.Namespace, store: Store) -> int:
    gate = None if args.fail_on is None else _SEVERITY_RANK[Severity(args.fail_on)]
    tripped = False

    def watched(items: Iterator[Finding]) -> Iterator[Finding]:
        nonlocal tripped
        for f in items:
            if gate is not None and f.status is FindingStatus.OPEN:
                tripped = tripped or _SEVERITY_RANK[f.severity] >= gate
            yield f

    any_finding, findings = _peek(watched(store.iter_findings(include_resolved=args.all)))
    if args.json:
        write_json_array(finding_view(f) for f in findings)
    elif not any_finding:
        print("no findings" if args.all else "no open findings")
    # Open gpu-missing findings come grouped by host after the others: one line per host.
    for f in () if args.json else findings:
        if f.rule != GPU_MISSING or f.status is FindingStatus.RESOLVED:
            print(finding_line(f))
    for group in () if args.json else store.missing_by_host():
        print(missing_line(group))
    return VerifierExit.FINDINGS if tripped else VerifierExit.OK


def cmd_ingest(args: argparse.Namespace, store: Store, config: VerifierConfig) -> int:
    from verifier.ingest import ingest, read_envelope_file  # noqa: PLC0415

    s = config.stream
    limits = pipeline.Limits(
        s.max_message_bytes, s.clock_skew, s.offline_max_age, s.nonce_retention
    )
    files: list[tuple[str, bytes | AttestError]] = []
    for path in args.envelopes:
        try:
            files.append((str(path), read_envelope_file(path, limits.max_envelope_bytes)))
        except AttestError as exc:
            files.append((str(path), exc))
    outcomes = ingest(store, files, _now(), limits)
    rows = []
    for o in outcomes:
        if o.accepted is not None:
            rows.append({"file": o.name, "result": "accepted", **jsonable(o.accepted)})
        elif o.already is not None:
            # This very envelope is already stored (a re-run after a crash): not a refusal.
            rows.append({"file": o.name, "result": "already-accepted", "agent_id":
                         o.already.agent_id, "seq": o.already.seq,
                         "log_index": o.already.log_index})  # fmt: skip
        elif o.error is not None:
            rows.append({"file": o.name, "result": "rejected", "code": o.error.code,
                         "message": str(o.error)})  # fmt: skip
    if args.json:
        print_json(rows)
    else:
        for row in rows:
            detail = f"seq={row.get('seq')} log_index={row.get('log_index')}"
            if row["result"] == "rejected":
                detail = f"{row['code']}: {row['message']}"
            print(escape(f"{row['file']}: {row['result']} {detail}"))
    return VerifierExit.OK if all(o.error is None for o in outcomes) else VerifierExit.REFUSED


def cmd_ca_export(_args: argparse.Namespace, config: VerifierConfig) -> int:
    from verifier.ca import load_or_create_ca  # noqa: PLC0415

    path = config.state_dir / "ca.pem"
    if not path.exists():
        load_or_create_ca(config.state_dir, _now())
    sys.stdout.write(path.read_text(encoding="ascii"))
    return VerifierExit.OK


# --- parser -------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpu-attest-verifier",
        description="Verify, store and reconcile GPU attestation evidence.",
        epilog=VerifierExit.epilog() + "\n\n" + __doc__.split("\n\n")[-1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", type=Path, help="verifier.toml (default /etc/gpu-attest/)")
    parser.add_argument("--log-json", action="store_true", help="log JSON lines")
    # The same options are accepted after the subcommand too (`serve --config F`, docs/design.md
    # §8);
    # SUPPRESS keeps a value given before the subcommand when none is given after it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, default=argparse.SUPPRESS, help="verifier.toml")
    common.add_argument("--log-json", action="store_true", default=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", parents=[common], help="run the verifier service")
    serve.add_argument("--insecure-plaintext", action="store_true",
                       help="no TLS; loopback addresses only; warns at every start")  # fmt: skip
    serve.add_argument(
        "--workers", type=_worker_count, metavar="N",
        help="worker processes sharing the ports and the store (default: the config's "
        "`workers`, whose 0 is one per CPU core; 1: a single process)",
    )  # fmt: skip
    # Set by the supervisor on the workers it starts (verifier/supervisor.py), not by people.
    serve.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    serve.add_argument("--worker-notify-fd", type=int, help=argparse.SUPPRESS)
    token = sub.add_parser("token", help="enrollment tokens").add_subparsers(
        dest="action", required=True
    )
    create = token.add_parser("create", parents=[common], help="make a one-time enrollment token")
    create.add_argument("--site", required=True, help="site the enrolled agent will belong to")
    create.add_argument(
        "--ttl", type=parse_ttl, default=timedelta(hours=24),
        help="lifetime such as 30m, 24h, 7d (default 24h; at most 30d)",
    )  # fmt: skip
    create.add_argument("--json", action="store_true")
    sub.add_parser("agents", parents=[common], help="list enrolled agents").add_argument(
        "--json", action="store_true"
    )
    agent = sub.add_parser("agent", help="act on one agent").add_subparsers(
        dest="action", required=True
    )
    revoke = agent.add_parser("revoke", parents=[common], help="revoke an agent (audited)")
    revoke.add_argument("agent")
    revoke.add_argument("--reason", default="revoked by operator")
    fleet = sub.add_parser("fleet", parents=[common], help="GPUs grouped by host")
    fleet.add_argument("--json", action="store_true")
    fleet.add_argument("--site")
    findings = sub.add_parser(
        "findings", parents=[common], help="open findings (--all: resolved too)"
    )
    findings.add_argument("--json", action="store_true")
    findings.add_argument("--all", action="store_true")
    findings.add_argument(
        "--fail-on", choices=[s.value for s in Severity], metavar="SEVERITY",
        help="exit 5 when an open finding of this severity or higher exists "
        "(critical, high, medium, low)",
    )  # fmt: skip
    add_findings_ack_parser(findings, common)
    ingest = sub.add_parser(
        "ingest", parents=[common], help="verify and store offline envelope files"
    )
    ingest.add_argument("envelopes", nargs="+", type=Path)
    ingest.add_argument("--json", action="store_true")
    add_registry_parser(sub, common)
    add_log_parser(sub, common)
    add_policy_parser(sub, common)
    add_compliance_parsers(sub, common)
    add_report_parser(sub, common)
    add_landmark_parser(sub)
    ca = sub.add_parser("ca", help="the verifier CA").add_subparsers(dest="action", required=True)
    ca.add_parser("export", parents=[common], help="print the CA certificate PEM (agents' --ca)")
    return parser


_STORE_COMMANDS: dict[tuple[str, str | None], Callable[[argparse.Namespace, Store], int]] = {
    ("token", "create"): cmd_token_create,
    ("agents", None): cmd_agents,
    ("agent", "revoke"): cmd_agent_revoke,
    ("findings", None): cmd_findings,
    ("findings", "ack"): cmd_findings_ack,
}


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "policy":  # packs are data shipped with the verifier: no state, no config
        return run_policy_command(args)
    if args.command == "landmark":  # its own config file (landmark.toml) and state
        return run_landmark_command(args)
    config = load_config(args.config)
    prepare_state(config, args.command, getattr(args, "action", None), config_source(args.config))
    if args.command == "serve":
        return cmd_serve(args, config)
    if args.command == "ca":
        return cmd_ca_export(args, config)
    store = _store(config)
    try:
        if args.command == "ingest":
            return cmd_ingest(args, store, config)
        if args.command == "log":
            return run_log_command(args, store, config)
        if args.command in ("reconcile", "holdings"):
            return run_compliance_command(args, store, config)
        if args.command == "registry":
            return run_registry_command(args, store)
        if args.command == "report":
            return run_report_command(args, store, config)
        if args.command == "fleet":
            return cmd_fleet(args, store, config)
        return _STORE_COMMANDS[(args.command, getattr(args, "action", None))](args, store)
    finally:
        store.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `gpu-attest-verifier`; returns the documented exit code."""
    # grpc's C core logs TLS handshake failures itself, in its own format, to stderr: the
    # verifier logs in one format (attest/logfmt.py). Before grpc is imported; an operator who
    # sets GRPC_VERBOSITY keeps it.
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse's usage errors (printed) and --help
        return VerifierExit.USAGE if exc.code else VerifierExit.OK
    setup_logging("json" if args.log_json else "text")
    # Whatever the operator's umask, state is created private (0700 directories, 0600 files);
    # files meant to be public (ca.pem, server.pem) set their mode explicitly.
    umask = os.umask(0o077)
    try:
        return _dispatch(args)
    except BrokenPipeError:
        return _stdout_closed()
    except (AttestError, OSError) as exc:
        code = exit_code_for(exc)
        if code is VerifierExit.CONFIG:
            print(f"gpu-attest-verifier: configuration: {exc}", file=sys.stderr)
        elif isinstance(exc, StoreError):
            print(f"gpu-attest-verifier: store: {exc.code}: {exc}", file=sys.stderr)
        elif isinstance(exc, AttestError):
            print(f"gpu-attest-verifier: {exc.code}: {exc}", file=sys.stderr)
        else:
            print(f"gpu-attest-verifier: {exc}", file=sys.stderr)
        return code
    finally:
        os.umask(umask)


def _stdout_closed() -> int:
    """The reader of stdout went away (`fleet | head`): what it wanted it has; stop quietly
    with 0, pointing stdout at /dev/null so the interpreter's final flush cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return VerifierExit.OK


if __name__ == "__main__":
    sys.exit(main())
