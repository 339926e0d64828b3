"""gpu-attest-report: what a regulator runs, offline, to check the verifier's transparency log.

Needs only `cryptography`, the standard library and `attest` (no gRPC, no protobuf).

    gpu-attest-report checkpoint verify CHECKPOINT --key VERIFIER.pub [--origin O]
    gpu-attest-report proof verify FILE.tlog-proof --key VERIFIER.pub [--entry ENTRY] [--origin O]
    gpu-attest-report proof verify SEQ.receipt --entry ENVELOPE --key VERIFIER.pub [--origin O]
    gpu-attest-report consistency OLD.checkpoint NEW.checkpoint --proof FILE --key VERIFIER.pub
    gpu-attest-report verify R.json --key REPORT.pub [--since-checkpoint OLD] [--log-key LOG.pub]

The key file holds the log's Ed25519 public key as PEM, as base64 SubjectPublicKeyInfo, or as a
note verifier key `<name>+<key id>+<base64>`. Unless a verifier key names it, the key name is the
log's origin (`--key-name` overrides it).

Exit codes: attest/exits.py (`ReportExit`), listed by `--help`: 0 the input verified; 1 it did not
(bad signature, proof, or malformed input); 2 usage error.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from attest import checkpoint as cp
from attest import receipts, report_verify
from attest.errors import AttestError, DecodeError
from attest.exits import ReportExit
from attest.keys import PublicKey
from attest.model import Receipt

#: No file this tool reads is legitimately larger; bigger input is refused before parsing.
MAX_INPUT_BYTES = 16 * 1024 * 1024
_VKEY = re.compile(r"[^\s+]+\+[0-9a-f]{8}\+[A-Za-z0-9+/]+={0,2}")


class UsageError(Exception):
    """The command line or an input file cannot be used (exit code 2)."""


def _read(path: str) -> bytes:
    try:
        with Path(path).open("rb") as handle:
            data = handle.read(MAX_INPUT_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from exc
    if len(data) > MAX_INPUT_BYTES:
        raise UsageError(f"{path} is larger than {MAX_INPUT_BYTES} bytes")
    return data


def _load_key(path: str, key_name: str | None, note: bytes) -> cp.NoteKey:
    """The trusted note key from a key file; the name defaults to the note's (claimed) origin.

    Taking the name from untrusted text is safe: only a signature by the trusted key verifies,
    and the origin is checked against --origin when one is given.
    """
    text = _read(path).decode("utf-8", "replace").strip()
    try:
        if text.startswith("-----BEGIN"):
            public = PublicKey.from_pem(text.encode())
        elif _VKEY.fullmatch(text):
            vkey = cp.NoteKey.from_vkey(text)
            if key_name is not None and key_name != vkey.name:
                raise UsageError(f"--key-name {key_name!r} contradicts the key's {vkey.name!r}")
            return vkey
        else:
            public = PublicKey.from_base64(text)
        name = key_name if key_name is not None else _claimed_origin(note)
        return cp.NoteKey(name, public)
    except AttestError as exc:
        raise UsageError(f"cannot use key file {path}: {exc}") from exc


def _claimed_origin(note: bytes) -> str:
    try:
        return cp.parse_checkpoint_text(cp.parse_note(note).text).origin
    except DecodeError:
        return "unknown"  # the checkpoint itself fails to parse right after, with the reason


def _checkpoint_fields(checkpoint: cp.Checkpoint) -> dict[str, object]:
    return {"origin": checkpoint.origin, "size": checkpoint.size, "root": checkpoint.root.hex()}


def _cmd_checkpoint(opts: argparse.Namespace) -> dict[str, object]:
    note = _read(opts.checkpoint)
    key = _load_key(opts.key, opts.key_name, note)
    checkpoint = cp.verify_checkpoint(note, key, opts.origin)
    return {"checkpoint": _checkpoint_fields(checkpoint), "key": key.vkey()}


def _cmd_proof(opts: argparse.Namespace) -> dict[str, object]:
    data = _read(opts.proof)
    if not data.startswith(cp.TLOG_PROOF_HEADER.encode()):
        try:
            receipt = receipts.parse_receipt(data)
        except DecodeError:
            receipt = None  # neither: the .tlog-proof parser below says what is wrong
        if receipt is not None:
            return _receipt_proof(data, receipt, opts)
    try:
        parsed = cp.parse_tlog_proof(data)
    except DecodeError:
        parsed = None  # verify_tlog_proof below reports the reason as "invalid"
    key = _load_key(opts.key, opts.key_name, parsed.signed_checkpoint if parsed else b"")
    if opts.entry is not None:
        entry = _read(opts.entry)
    elif parsed is not None and parsed.extra is not None:
        entry = parsed.extra  # unauthenticated until the inclusion proof below verifies it
    elif parsed is not None:
        raise UsageError("the proof carries no entry bytes: pass --entry FILE")
    else:
        entry = b""
    proof, checkpoint = cp.verify_tlog_proof(data, entry, key, opts.origin)
    return {
        "index": proof.index,
        "entry_sha256": _sha256_hex(entry),
        "checkpoint": _checkpoint_fields(checkpoint),
        "key": key.vkey(),
    }


def _receipt_proof(data: bytes, receipt: Receipt, opts: argparse.Namespace) -> dict[str, object]:
    """A verifier's receipt (`gpu-attest-agent receipts --out`): its checkpoint and the
    inclusion proof of the envelope's leaf at its log index (attest/receipts.py)."""
    if opts.entry is None:
        raise UsageError("a receipt carries no entry bytes: pass --entry ENVELOPE")
    entry = _read(opts.entry)
    key = _load_key(opts.key, opts.key_name, receipt.checkpoint)
    verified = receipts.verify_receipt(data, entry, key, opts.origin)
    return {
        "index": receipt.log_index,
        "entry_sha256": _sha256_hex(entry),
        "checkpoint": _checkpoint_fields(verified.checkpoint),
        "key": key.vkey(),
        "receipt": {
            "agent_id": receipt.agent_id, "seq": receipt.seq,
            "accepted_at": receipt.accepted_at.isoformat(),
            "freshness": receipt.freshness.value,
        },
    }  # fmt: skip


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _cmd_consistency(opts: argparse.Namespace) -> dict[str, object]:
    old, new, proof = _read(opts.old), _read(opts.new), _read(opts.proof)
    key = _load_key(opts.key, opts.key_name, old)
    old_cp, new_cp = cp.verify_checkpoint_consistency(old, new, proof, key, opts.origin)
    return {"old": _checkpoint_fields(old_cp), "new": _checkpoint_fields(new_cp)}


def _cmd_verify(opts: argparse.Namespace) -> dict[str, object]:
    """Every check of a signed report (attest/report_verify.py); one failure line each."""
    data = _read(opts.report)
    try:
        key = PublicKey.from_pem(_read(opts.key).strip())
        log_key = None if opts.log_key is None else PublicKey.from_pem(_read(opts.log_key).strip())
    except AttestError as exc:
        raise UsageError(f"cannot use the key file: {exc}") from exc
    since = None if opts.since_checkpoint is None else _read(opts.since_checkpoint)
    check = report_verify.verify_report(data, key, since=since, log_key=log_key)
    if not check.valid:
        raise ReportInvalidError(check)
    return dict(check.facts)


class ReportInvalidError(AttestError):
    """A report failed one or more checks: `check.failures` says which, one line each."""

    code = "report-invalid"

    def __init__(self, check: report_verify.ReportCheck) -> None:
        super().__init__("; ".join(f"{what}: {line}" for what, line in check.failures))
        self.check = check


def _key_options(parser: argparse.ArgumentParser) -> None:
    # SUPPRESS: `--json` may also come after the command without undoing a global `--json`.
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    parser.add_argument("--key", required=True, help="the log's public key (PEM, base64, vkey)")
    parser.add_argument("--origin", help="the log origin the checkpoint must name")
    parser.add_argument("--key-name", help="the note key name (default: the log origin)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpu-attest-report",
        description="Verify gpu-attest transparency-log checkpoints and proofs offline.",
        epilog=ReportExit.epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    commands = parser.add_subparsers(dest="command", required=True)

    checkpoint = commands.add_parser("checkpoint", help="signed checkpoints")
    checkpoint_verbs = checkpoint.add_subparsers(dest="verb", required=True)
    verify_cp = checkpoint_verbs.add_parser("verify", help="check a checkpoint's signature")
    verify_cp.add_argument("checkpoint")
    _key_options(verify_cp)
    verify_cp.set_defaults(run=_cmd_checkpoint)

    proof = commands.add_parser("proof", help="inclusion proofs (.tlog-proof, or a receipt)")
    proof_verbs = proof.add_subparsers(dest="verb", required=True)
    verify_proof = proof_verbs.add_parser("verify", help="check an entry's inclusion proof")
    verify_proof.add_argument("proof")
    verify_proof.add_argument(
        "--entry", help="the logged entry bytes (default: the proof's extra; a receipt's envelope)"
    )
    _key_options(verify_proof)
    verify_proof.set_defaults(run=_cmd_proof)

    consistency = commands.add_parser("consistency", help="check the log only grew")
    consistency.add_argument("old")
    consistency.add_argument("new")
    consistency.add_argument("--proof", required=True, help="the consistency proof file")
    _key_options(consistency)
    consistency.set_defaults(run=_cmd_consistency)

    report = commands.add_parser("verify", help="verify a signed report and its evidence")
    report.add_argument("report")
    report.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    report.add_argument("--key", required=True, help="the verifier's report key (PEM)")
    report.add_argument(
        "--since-checkpoint",
        help="a checkpoint (or an older report) you kept: the log must extend it",
    )
    report.add_argument("--log-key", help="pin the log key (PEM) instead of the report's")
    report.set_defaults(run=_cmd_verify)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code (0 valid, 1 invalid, 2 usage)."""
    try:
        opts = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse's own usage errors and --help
        return ReportExit.USAGE if exc.code else ReportExit.VALID
    try:
        result = opts.run(opts)
    except UsageError as exc:
        if opts.json:  # a script asked for JSON: it gets JSON, whatever happened
            print(json.dumps({"valid": False, "code": "usage", "error": str(exc)}, sort_keys=True))
        print(f"gpu-attest-report: {exc}", file=sys.stderr)
        return ReportExit.USAGE
    except ReportInvalidError as exc:
        failures = [{"check": what, "error": line} for what, line in exc.check.failures]
        if opts.json:
            print(json.dumps({"valid": False, "code": exc.code, "failures": failures}))
        for what, line in exc.check.failures:
            print(f"INVALID ({what}): {line}", file=sys.stderr)
        return ReportExit.INVALID
    except AttestError as exc:
        if opts.json:
            print(json.dumps({"valid": False, "code": exc.code, "error": str(exc)}))
        print(f"INVALID ({exc.code}): {exc}", file=sys.stderr)
        return ReportExit.INVALID
    if opts.json:
        print(json.dumps({"valid": True, **result}, sort_keys=True))
    else:
        print("VALID")
        for name, value in result.items():
            print(f"  {name}: {json.dumps(value, sort_keys=True)}")
    return ReportExit.VALID


if __name__ == "__main__":
    sys.exit(main())
