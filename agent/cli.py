"""`gpu-attest-agent`: the node agent's command line.

    gpu-attest-agent run [--config F] [--simulate M.toml] [--state-dir D] [--insecure-plaintext]
    gpu-attest-agent enroll --verifier HOST:PORT --token T [--ca CA.pem] [--state-dir D]
                            [--attest HOST:PORT] [--simulate M.toml] [--insecure-plaintext]
                            [--force] [--timeout 2m]

`enroll --verifier` names the verifier's enroll port (server-authenticated TLS, 7444 by default);
`--attest` the Attest port (mTLS, 7443) that `run` uses when agent.toml names no `verifier`.
`enroll` retries an unreachable verifier for `--timeout` (default 2m), then says the likely cause
(wrong port, CA missing, nothing listening) and exits 11; a certificate that does not verify
ends it at once. `once` without `--out` refuses (exit 2) to write the binary envelope to a
terminal.
    gpu-attest-agent inventory [--json] [--simulate M.toml]
    gpu-attest-agent once [--out FILE] [--simulate M.toml] [--config F] [--state-dir D]
    gpu-attest-agent rotate-key [--config F] [--state-dir D]
    gpu-attest-agent receipts [--json] [--out DIR] [--config F] [--state-dir D]
    gpu-attest-agent locate [--json] [--config F] [--state-dir D]

`once` refuses (exit 2) while `run` or `rotate-key` holds the state dir: the chain has one writer.
`rotate-key` replaces agent.key and the client certificate now, as `run` does by itself once
less than a third of the certificate's lifetime is left (stop `run` first; the spool must be
empty, or a rotation left unfinished by a crash is completed).
`receipts` lists the verifier's receipts the spool keeps (the last 1000, each verified when it
arrived: docs/protocol.md §5); `--out DIR` also writes each as DIR/<seq>.receipt, which
`gpu-attest-report proof verify` checks with the envelope's bytes.
`locate` lets each landmark of agent.toml measure this agent once now and prints what it signed:
landmark id, address, probes, least round trip and the distance bound it implies. Nothing is
spooled or sent to the verifier; `run` probes on its own every `landmark_interval`. It exits 16
when any landmark failed (each failure is listed with its reason), 2 when none is configured.

Exit codes: agent/exits.py (`AgentExit`), listed by `--help`; `inventory` uses 0 and 2-5.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from agent.config import AgentConfig, load_config
from agent.exits import AgentExit, exit_code_for
from agent.logs import get_logger, setup_logging
from attest import errors, tomlconf
from attest.files import require_private_dir, write_secret_file
from attest.hostport import parse_host_port, require_loopback

#: RotateKey attempts of `rotate-key` (retryable failures, with the configured backoff).
_ROTATE_ATTEMPTS = 5

log = get_logger("cli")


def _timeout(text: str) -> float:
    """`--timeout`: a duration (90s, 5m; attest.tomlconf.parse_duration) from 1s to 1d."""
    try:
        seconds = tomlconf.parse_duration(text).total_seconds()
    except tomlconf.Invalid as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not 1 <= seconds <= 86400:
        raise argparse.ArgumentTypeError(f"{text!r}: must be from 1s to 1d")
    return seconds


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpu-attest-agent",
        description=__doc__.split("\n")[0],
        epilog=AgentExit.epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="attest continuously to the verifier")
    once = sub.add_parser("once", help="write one signed envelope (offline sites)")
    for p in (run, once):
        p.add_argument("--config", type=Path, default=None)
        p.add_argument("--simulate", type=Path, default=None, metavar="M.toml")
        p.add_argument("--state-dir", type=Path, default=None)
    run.add_argument("--insecure-plaintext", action="store_true", help="loopback tests only")
    once.add_argument("--out", type=Path, default=None, help="file (default: stdout)")
    enroll = sub.add_parser("enroll", help="exchange a one-time token for an identity")
    enroll.add_argument("--verifier", required=True, metavar="HOST:PORT")
    enroll.add_argument("--token", required=True)
    enroll.add_argument("--ca", type=Path, default=None, metavar="CA.pem")
    enroll.add_argument(
        "--attest",
        default=None,
        metavar="HOST:PORT",
        help="the verifier's Attest (mTLS) address to record; default: --verifier",
    )
    enroll.add_argument("--state-dir", type=Path, default=None)
    enroll.add_argument("--config", type=Path, default=None)
    enroll.add_argument("--simulate", type=Path, default=None, metavar="M.toml")
    enroll.add_argument("--insecure-plaintext", action="store_true", help="loopback tests only")
    enroll.add_argument(
        "--force", action="store_true", help="re-enroll: retire the current identity and spool"
    )
    enroll.add_argument(
        "--timeout", type=_timeout, default=None, metavar="DURATION",
        help="give up (exit 11) after this long, e.g. 30s, 5m (default 2m)",
    )  # fmt: skip
    rotate = sub.add_parser("rotate-key", help="replace the agent key and client certificate")
    rotate.add_argument("--config", type=Path, default=None)
    rotate.add_argument("--state-dir", type=Path, default=None)
    receipts = sub.add_parser("receipts", help="list the verifier's receipts the spool keeps")
    receipts.add_argument("--config", type=Path, default=None)
    receipts.add_argument("--state-dir", type=Path, default=None)
    receipts.add_argument("--json", action="store_true", help="print them as JSON")
    receipts.add_argument("--out", type=Path, default=None, metavar="DIR",
                          help="also write each receipt to DIR/<seq>.receipt")  # fmt: skip
    locate = sub.add_parser("locate", help="let each configured landmark measure this agent")
    locate.add_argument("--config", type=Path, default=None)
    locate.add_argument("--state-dir", type=Path, default=None)
    locate.add_argument("--json", action="store_true", help="print the results as JSON")
    sub.add_parser("inventory", help="what NVML sees, unsigned", add_help=False)
    return parser


def _config(args: argparse.Namespace) -> tuple[AgentConfig, dict[str, object]]:
    overrides: dict[str, object] = {}
    if getattr(args, "state_dir", None) is not None:
        overrides["state_dir"] = args.state_dir.resolve()
    if getattr(args, "simulate", None) is not None:
        overrides["simulate"] = args.simulate.resolve()
    if getattr(args, "insecure_plaintext", False):
        overrides["insecure_plaintext"] = True
    cfg = load_config(args.config).with_overrides(**overrides)
    # agent.key and the spool live there: a directory others can enter is refused (exit 2, the
    # unit does not restart on it) before any key is read or written.
    require_private_dir(cfg.state_dir)
    return cfg, overrides


def _cmd_run(args: argparse.Namespace) -> int:
    from agent.daemon import run_daemon  # noqa: PLC0415 - keeps `inventory` free of grpc

    cfg, overrides = _config(args)
    setup_logging(cfg.log_format)
    return run_daemon(cfg, args.config, overrides)


def _cmd_once(args: argparse.Namespace) -> int:
    from agent.client import utcnow  # noqa: PLC0415
    from agent.daemon import open_runtime  # noqa: PLC0415
    from agent.identity import state_lock  # noqa: PLC0415

    if args.out is None and sys.stdout.isatty():
        # Checked first: producing an envelope advances the chain, and binary on a terminal is
        # lost (and may garble it).
        raise errors.ConfigError(
            "refusing to write a binary envelope to a terminal: use --out FILE"
        )
    cfg, _ = _config(args)
    setup_logging(cfg.log_format)
    # The chain has one writer: with `run` producing too, two envelopes could take one seq
    # (the verifier would call it a fork). The lock refuses that instead.
    with state_lock(cfg.state_dir):
        runtime = open_runtime(cfg)
        try:
            entry = runtime.attestor.produce(b"", utcnow())
        finally:
            runtime.close()
    if args.out is None:
        sys.stdout.buffer.write(entry.envelope)
        sys.stdout.buffer.flush()
    else:
        write_secret_file(args.out, entry.envelope)
        log.info("wrote seq %d (%d bytes) to %s", entry.seq, len(entry.envelope), args.out)
    return AgentExit.OK


def _cmd_enroll(args: argparse.Namespace) -> int:
    from agent.client import ENROLL_DEADLINE_S, Backoff, EnrollRequest, enroll  # noqa: PLC0415
    from agent.hostfacts import collect_host_facts  # noqa: PLC0415

    cfg, _ = _config(args)
    setup_logging(cfg.log_format)
    target = parse_host_port(args.verifier, "--verifier")
    if cfg.insecure_plaintext:
        require_loopback(target, "--insecure-plaintext")
        log.warning("INSECURE: enrolling over plaintext gRPC to %s", target)
    ca_pem = None
    if args.ca is not None:
        try:
            ca_pem = args.ca.read_bytes()
        except OSError as exc:
            raise errors.ConfigError(f"cannot read --ca {args.ca}: {exc.strerror}") from exc
    _refuse_or_retire(cfg, force=args.force)
    facts = collect_host_facts(cfg.host_root)
    hostname = facts.hostname if isinstance(facts.hostname, str) else socket.gethostname()
    machine_id = facts.machine_id if isinstance(facts.machine_id, str) else ""
    if cfg.simulate is not None:
        from agent.simulate import load_machine  # noqa: PLC0415

        host = load_machine(cfg.simulate).host
        hostname, machine_id = host.hostname or hostname, host.machine_id or machine_id
    request = EnrollRequest(
        target=target,
        token=args.token,
        ca_pem=ca_pem,
        state_dir=cfg.state_dir,
        hostname=hostname,
        machine_id=machine_id,
        insecure_plaintext=cfg.insecure_plaintext,
        attest_target=None if args.attest is None else parse_host_port(args.attest, "--attest"),
        deadline_s=ENROLL_DEADLINE_S if args.timeout is None else args.timeout,
    )
    identity = asyncio.run(enroll(request, Backoff(cfg.backoff_initial_s, cfg.backoff_cap_s)))
    print(f"enrolled as agent {identity.agent_id} at site {identity.site_id}")
    return AgentExit.OK


def _cmd_rotate_key(args: argparse.Namespace) -> int:
    from agent.daemon import verifier_target  # noqa: PLC0415
    from agent.identity import certificate_window, load_identity  # noqa: PLC0415
    from agent.rotation import rotate_by_hand  # noqa: PLC0415

    cfg, _ = _config(args)
    setup_logging(cfg.log_format)
    if cfg.insecure_plaintext:
        raise errors.ConfigError("rotate-key needs the mTLS identity; insecure_plaintext is set")
    identity = load_identity(cfg.state_dir)
    target = verifier_target(cfg, identity)
    tls = asyncio.run(rotate_by_hand(cfg, identity, target, _ROTATE_ATTEMPTS))
    not_after = certificate_window(tls.cert_pem)[1]
    print(f"rotated the key of agent {identity.agent_id}: certificate valid until {not_after}")
    return AgentExit.OK


def _receipt_fields(seq: int, raw: bytes) -> dict[str, object]:
    """What a kept receipt says (verified when it arrived; one kept in the earlier, DSSE-signed
    form no longer decodes and shows as nulls)."""
    from attest.checkpoint import parse_checkpoint_text, parse_note  # noqa: PLC0415
    from attest.receipts import parse_receipt  # noqa: PLC0415

    fields: dict[str, object] = {
        "seq": seq, "log_index": None, "envelope_hash": None, "checkpoint_size": None,
        "accepted_at": None,
    }  # fmt: skip
    try:
        receipt = parse_receipt(raw)
        size = parse_checkpoint_text(parse_note(receipt.checkpoint).text).size
    except errors.DecodeError:
        return fields
    fields.update(
        log_index=receipt.log_index, envelope_hash=receipt.envelope_hash.hex(),
        checkpoint_size=size, accepted_at=receipt.accepted_at.isoformat(),
    )  # fmt: skip
    return fields


def _cmd_receipts(args: argparse.Namespace) -> int:
    import json  # noqa: PLC0415

    from agent.spool import SPOOL_FILE, Spool  # noqa: PLC0415

    cfg, _ = _config(args)
    kept = []
    if (cfg.state_dir / SPOOL_FILE).exists():  # listing never creates a spool
        spool = Spool.open(cfg.state_dir, cfg.spool_max_bytes)
        try:
            kept = spool.receipts()
        finally:
            spool.close()
    if args.out is not None:
        try:
            args.out.mkdir(parents=True, exist_ok=True)
            for item in kept:
                (args.out / f"{item.seq}.receipt").write_bytes(item.receipt)
        except OSError as exc:
            raise errors.ConfigError(f"cannot write to --out {args.out}: {exc}") from exc
    rows = [
        {**_receipt_fields(item.seq, item.receipt), "received_at": item.received_at}
        for item in kept
    ]
    if args.json:
        print(json.dumps({"receipts": rows}, indent=2))
        return AgentExit.OK
    print(f"{'SEQ':>8} {'LOG INDEX':>10} {'CHECKPOINT':>10}  ACCEPTED AT                ENVELOPE")
    for row in rows:
        print(
            f"{row['seq']:>8} {row['log_index'] if row['log_index'] is not None else '-':>10} "
            f"{row['checkpoint_size'] if row['checkpoint_size'] is not None else '-':>10}  "
            f"{row['accepted_at'] or '-':<26} {row['envelope_hash'] or '-'}"
        )
    print(f"{len(rows)} receipt(s) kept")
    return AgentExit.OK


def _cmd_locate(args: argparse.Namespace) -> int:
    import json  # noqa: PLC0415

    from agent.identity import load_identity  # noqa: PLC0415
    from agent.landmarks import located_rows  # noqa: PLC0415
    from agent.rotation import signing_key  # noqa: PLC0415

    cfg, _ = _config(args)
    setup_logging(cfg.log_format)
    if not cfg.landmarks:
        raise errors.ConfigError("no landmark configured: add landmarks = [...] to agent.toml")
    identity = load_identity(cfg.state_dir)
    rows = asyncio.run(located_rows(cfg.landmarks, identity.agent_id, signing_key(cfg.state_dir)))
    if args.json:
        print(json.dumps({"agent_id": identity.agent_id, "landmarks": rows}, indent=2))
    else:
        print(f"{'LANDMARK':<24} {'ADDRESS':<28} {'PROBES':>6} {'RTT MIN ms':>10} {'WITHIN km':>9}")
        for row in rows:
            if row["ok"]:
                print(
                    f"{row['landmark_id']!s:<24} {row['address']!s:<28} {row['probes']!s:>6} "
                    f"{row['rtt_min_ms']:>10.3f} {row['bound_km']:>9.0f}"
                )
            else:
                print(f"{'-':<24} {row['address']!s:<28} failed ({row['result']}): {row['reason']}")
    failed = sum(1 for row in rows if not row["ok"])
    if failed:
        print(
            f"gpu-attest-agent locate: {failed} of {len(rows)} landmark(s) failed", file=sys.stderr
        )
        return AgentExit.LANDMARK
    return AgentExit.OK


def _refuse_or_retire(cfg: AgentConfig, force: bool) -> None:
    from agent.client import utcnow  # noqa: PLC0415
    from agent.identity import load_identity, retire_enrollment  # noqa: PLC0415

    try:
        current = load_identity(cfg.state_dir)
    except errors.NotEnrolledError:
        return
    if not force:
        raise errors.ConfigError(
            f"already enrolled as {current.agent_id} in {cfg.state_dir}; --force re-enrolls "
            "(the current identity and spool are kept in a retired-* directory)"
        )
    retired = retire_enrollment(cfg.state_dir, utcnow().strftime("%Y%m%dT%H%M%SZ"))
    log.warning("re-enrolling: %s retired to %s", current.agent_id, retired)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    # grpc's C core logs TLS handshake failures itself, in its own format, to stderr; the
    # agent says what went wrong in its own lines. Before grpc is imported; an operator who
    # sets GRPC_VERBOSITY keeps it.
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] == "inventory":
        from agent import inventory_cli  # noqa: PLC0415

        return inventory_cli.main(args_list[1:])
    parser = _parser()
    try:
        args = parser.parse_args(args_list)
    except SystemExit as exc:
        return AgentExit.CONFIG if exc.code else AgentExit.OK
    commands = {
        "run": _cmd_run,
        "once": _cmd_once,
        "enroll": _cmd_enroll,
        "rotate-key": _cmd_rotate_key,
        "receipts": _cmd_receipts,
        "locate": _cmd_locate,
    }
    # Whatever the operator's umask, what the agent creates is private (0700 / 0600).
    umask = os.umask(0o077)
    try:
        return commands[args.command](args)
    except errors.AttestError as exc:
        print(f"gpu-attest-agent {args.command}: {exc} ({exc.code})", file=sys.stderr)
        return exit_code_for(exc)
    except KeyboardInterrupt:
        return AgentExit.OK
    finally:
        os.umask(umask)


if __name__ == "__main__":
    sys.exit(main())
