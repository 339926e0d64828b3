"""Offline verification of a signed regulator report (docs/verify.md, docs/design.md §15).

A report is a DSSE envelope in JSON form around an in-toto Statement v1 whose predicate holds
the period's holdings, the log checkpoint they stand on and a sample of the evidence entries
behind them. `verify_report` checks, with only this package and `cryptography`:

1. the report signature (by the verifier's report key), before the payload is parsed;
2. the signed checkpoint (by the log key the report names, or the one the caller pins);
3. consistency from the previous report's checkpoint, and from one the caller kept;
4. per sampled entry: that it is the one the checkpoint's root picks, its inclusion proof, the
   agent's signature on it, and that its GPUs support the totals it samples.

It returns every failure, one line each, rather than stopping at the first; only a report
whose signature fails is not read further. Code: `attest/report_entries.py` reads the entries.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from attest import checkpoint as cp
from attest import envelope as dsse
from attest import merkle
from attest.errors import AttestError, DecodeError, ProofError, SignatureError
from attest.keys import PublicKey, key_id
from attest.report_entries import PciIdentity, parse_envelope, parse_evidence_gpus

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
PREDICATE_TYPE = "https://gpu-attest.dev/report/v1"
#: Domain separation of the sample choice: no other hash of the root can collide with it.
SAMPLE_DOMAIN = b"gpu-attest report sample v1\x00"


#: What a signed but malformed predicate can raise while it is read: each becomes a failure
#: line, never a traceback.
_MALFORMED = (AttestError, ValueError, TypeError, KeyError, AttributeError, OverflowError)


def sample_index(root: bytes, site: str, candidates: Sequence[int]) -> int:
    """The log index a report samples at `site`: a function of the checkpoint root, so the
    verifier that signs the report cannot pick a favourable entry once the log is fixed.
    Raises ValueError when there is no candidate."""
    ordered = sorted(set(candidates))
    if not ordered:
        raise ValueError(f"site {site!r} has no candidate entry")
    digest = hashlib.sha256(SAMPLE_DOMAIN + root + site.encode("utf-8")).digest()
    return ordered[int.from_bytes(digest, "big") % len(ordered)]


def _b64(text: object, what: str) -> bytes:
    if not isinstance(text, str):
        raise DecodeError(f"{what} is not a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise DecodeError(f"{what} is not valid base64") from exc


def encode_report(statement: bytes, sign: Callable[[bytes], bytes], keyid: str) -> bytes:
    """The DSSE JSON envelope around `statement` (serialized once, signed as is)."""
    return _envelope_bytes(statement, keyid, sign(dsse.pae(PAYLOAD_TYPE, statement)))


def _envelope_bytes(statement: bytes, keyid: str, sig: bytes) -> bytes:
    """The one encoding of a report file: a byte changed outside the signed payload (spacing,
    key order, base64 padding) is refused too, so every byte of the file is checked."""
    document = {
        "payloadType": PAYLOAD_TYPE,
        "payload": base64.b64encode(statement).decode("ascii"),
        "signatures": [{"keyid": keyid, "sig": base64.b64encode(sig).decode("ascii")}],
    }
    return (json.dumps(document, indent=1) + "\n").encode("ascii")


def open_report(data: bytes, key: PublicKey) -> dict[str, Any]:
    """The statement of a report signed by `key`: the signature is checked over the payload
    bytes before they are parsed. Raises DecodeError / SignatureError."""
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DecodeError(f"the report is not JSON: {exc}") from exc
    if not isinstance(document, dict) or document.get("payloadType") != PAYLOAD_TYPE:
        raise DecodeError(f"the report is not a DSSE envelope of {PAYLOAD_TYPE}")
    payload = _b64(document.get("payload"), "the report payload")
    signatures = document.get("signatures")
    if not isinstance(signatures, list) or not signatures:
        raise SignatureError("the report carries no signature")
    if len(signatures) != 1 or not isinstance(signatures[0], dict):
        raise SignatureError("a report carries exactly one signature")
    if signatures[0].get("keyid") != key.keyid:
        raise SignatureError(f"no signature by the report key {key.keyid[:16]}")
    sig = _b64(signatures[0].get("sig"), "the report signature")
    key.verify(sig, dsse.pae(PAYLOAD_TYPE, payload))
    if data != _envelope_bytes(payload, key.keyid, sig):
        raise DecodeError("the report file is not in its one encoding: bytes outside the signed "
                          "payload were changed")  # fmt: skip
    try:
        statement = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DecodeError(f"the signed statement is not JSON: {exc}") from exc
    if not isinstance(statement, dict) or statement.get("_type") != STATEMENT_TYPE:
        raise DecodeError("the signed payload is not an in-toto Statement v1")
    if statement.get("predicateType") != PREDICATE_TYPE:
        raise DecodeError(f"the statement's predicate is not {PREDICATE_TYPE}")
    if not isinstance(statement.get("predicate"), dict):
        raise DecodeError("the statement has no predicate object")
    return statement


def _get(obj: object, key: str, kind: type, what: str) -> Any:
    if not isinstance(obj, dict) or not isinstance(obj.get(key), kind):
        raise DecodeError(f"{what}: {key!r} is missing or not a {kind.__name__}")
    return obj[key]


def _opt_int(value: object, what: str) -> int | None:
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise DecodeError(f"{what} is not an integer or null")


@dataclass
class ReportCheck:
    """What `verify_report` found: `failures` (check, line) empty means everything held."""

    failures: list[tuple[str, str]] = field(default_factory=list)
    facts: dict[str, object] = field(default_factory=dict)

    def fail(self, check: str, line: str) -> None:
        self.failures.append((check, line))

    @property
    def valid(self) -> bool:
        return not self.failures


def _log_key(log: object, pinned: PublicKey | None) -> cp.NoteKey:
    origin = _get(log, "origin", str, "log")
    if pinned is not None:
        return cp.NoteKey(origin, pinned)
    pem = _get(log, "public_key", str, "log")
    return cp.NoteKey(origin, PublicKey.from_pem(pem.encode("ascii")))


def _checkpoint_of_report(data: bytes, key: PublicKey) -> bytes:
    """The checkpoint note inside an older report (verified with the same report key)."""
    predicate = open_report(data, key)["predicate"]
    note = _get(_get(predicate, "log", dict, "older report"), "checkpoint", str, "older log")
    return str(note).encode("utf-8")


def _check_consistency(
    check: ReportCheck, log: dict[str, Any], key: cp.NoteKey, current: cp.Checkpoint
) -> cp.Checkpoint | None:
    """The embedded proof from the previous report's checkpoint; returns that checkpoint."""
    previous = log.get("previous")
    if previous is None:
        return None
    try:
        note = _get(previous, "checkpoint", str, "log.previous").encode("utf-8")
        old = cp.verify_checkpoint(note, key, current.origin)
        hashes = [bytes.fromhex(h) for h in _get(previous, "consistency", list, "log.previous")]
        merkle.verify_consistency(old.size, current.size, old.root, current.root, hashes)
    except _MALFORMED as exc:
        check.fail("consistency", f"the log is not consistent with the previous report's: {exc}")
        return None
    check.facts["previous_size"] = old.size
    return old


def _check_since(
    check: ReportCheck,
    since: bytes,
    key: cp.NoteKey,
    current: cp.Checkpoint,
    previous: cp.Checkpoint | None,
) -> None:
    try:
        old = cp.verify_checkpoint(since, key, current.origin)
    except AttestError as exc:
        check.fail("since-checkpoint", f"the checkpoint you kept does not verify: {exc}")
        return
    if old.size == current.size and old.root == current.root:
        return
    if previous is not None and previous.size == old.size and previous.root == old.root:
        return  # the embedded proof, checked above, leads from it
    if previous is not None and previous.size == old.size:
        check.fail(
            "consistency",
            f"the log rewrote history: the checkpoint you kept (size {old.size}) has another "
            "root than the report's previous checkpoint of that size",
        )
        return
    start = "none" if previous is None else f"size {previous.size}"
    check.fail(
        "consistency",
        f"the report carries no consistency proof from the checkpoint you kept (size "
        f"{old.size}; its proof starts at {start}): ask for a report made with --previous",
    )


def _site_counts(site: object) -> Counter[PciIdentity]:
    counts: Counter[PciIdentity] = Counter()
    for model in _get(site, "models", list, "site"):
        device = _opt_int(_get(model, "pci_device_id", object, "model"), "pci_device_id")
        subsystem = _opt_int(model.get("pci_subsystem_id"), "pci_subsystem_id")
        counts[device, subsystem] += int(_get(model, "units", int, "model"))
    return counts


def _pci(identity: PciIdentity) -> str:
    device, subsystem = identity
    if device is None:
        return "unreadable PCI ids"
    return f"PCI 0x{device:08x}/0x{subsystem or 0:08x}"


def _check_sample(
    check: ReportCheck, sample: dict[str, Any], site: dict[str, Any], tree: cp.Checkpoint
) -> None:
    site_id = site["id"]
    index = _get(sample, "log_index", int, "sample")
    where = f"sample of site {site_id} (log index {index})"
    chosen = sample_index(tree.root, site_id, _get(site, "evidence_candidates", list, "site"))
    if index != chosen:
        check.fail("sample-choice", f"{where}: the checkpoint root picks log index {chosen}")
    raw = _b64(sample.get("envelope"), f"{where} envelope")
    try:
        hashes = [bytes.fromhex(h) for h in _get(sample, "inclusion", list, "sample")]
        merkle.verify_inclusion(merkle.leaf_hash(raw), index, tree.size, hashes, tree.root)
    except (ProofError, ValueError, TypeError) as exc:
        check.fail("inclusion", f"{where}: the entry is not in the log at that index: {exc}")
    trusted: dict[str, PublicKey] = {}
    for item in _get(sample, "agent_keys", list, "sample"):
        der = _b64(item, f"{where} agent key")
        trusted[key_id(der)] = PublicKey.from_spki_der(der)
    try:
        envelope = parse_envelope(raw)
        payload = dsse.verify(envelope, dsse.EVIDENCE_PAYLOAD_TYPE, trusted).payload
        evidence = parse_evidence_gpus(payload)
    except AttestError as exc:
        check.fail("agent-signature", f"{where}: the entry's agent signature fails: {exc}")
        return
    if evidence.agent_id != sample.get("agent_id"):
        check.fail(
            "agent", f"{where}: the entry is agent {evidence.agent_id!r}'s, not the sample's"
        )
    counted = _site_counts(site)
    if not evidence.gpus:
        check.fail("totals", f"{where}: the entry lists no GPU to support the site's totals")
    for identity, shown in sorted(evidence.gpus.items(), key=lambda kv: repr(kv[0])):
        if shown > counted.get(identity, 0):
            check.fail(
                "totals",
                f"{where}: the entry shows {shown} GPUs of {_pci(identity)}, the report counts "
                f"{counted.get(identity, 0)} there",
            )


def _check_sites(check: ReportCheck, predicate: dict[str, Any], tree: cp.Checkpoint) -> None:
    sites = {s["id"]: s for s in _get(predicate, "sites", list, "predicate") if "id" in s}
    sampled: set[str] = set()
    for sample in _get(predicate, "samples", list, "predicate"):
        site = sites.get(_get(sample, "site", str, "sample"))
        if site is None:
            check.fail("samples", f"a sample names site {sample['site']!r}, which the report lacks")
            continue
        sampled.add(site["id"])
        try:
            _check_sample(check, sample, site, tree)
        except _MALFORMED as exc:
            check.fail("samples", f"sample of site {site['id']}: malformed: {exc}")
    for site_id, site in sites.items():
        units = _get(site, "units", int, f"site {site_id}")
        if sum(_site_counts(site).values()) != units:
            check.fail("totals", f"site {site_id}: its models do not add up to {units} GPUs")
        if units and site_id not in sampled:
            check.fail("samples", f"site {site_id} holds {units} GPUs but no entry is sampled")
    check.facts["samples"] = len(sampled)


def verify_report(
    data: bytes,
    key: PublicKey,
    *,
    since: bytes | None = None,
    log_key: PublicKey | None = None,
) -> ReportCheck:
    """Every check of a report (module docstring). `since` is a checkpoint note, or an older
    report signed by the same key, that the regulator kept; `log_key` pins the log key instead
    of the one the (signed) report names. Never raises for bad input: it becomes a failure."""
    check = ReportCheck()
    try:
        statement = open_report(data, key)
    except AttestError as exc:
        check.fail("report-signature", f"the report does not verify: {exc}")
        return check
    predicate: dict[str, Any] = statement["predicate"]
    try:
        log = _get(predicate, "log", dict, "predicate")
        note_key = _log_key(log, log_key)
        note = _get(log, "checkpoint", str, "log").encode("utf-8")
        tree = cp.verify_checkpoint(note, note_key, note_key.name)
        subject = hashlib.sha256(note).hexdigest()
        if subject not in json.dumps(statement.get("subject")):
            check.fail("checkpoint", "the statement's subject is not this checkpoint")
    except _MALFORMED as exc:
        check.fail("checkpoint", f"the report's checkpoint does not verify: {exc}")
        return check
    check.facts.update(checkpoint_size=tree.size, origin=tree.origin)
    previous = _check_consistency(check, log, note_key, tree)
    if since is not None:
        try:
            since_note = _checkpoint_of_report(since, key) if since.lstrip()[:1] == b"{" else since
        except _MALFORMED as exc:
            check.fail("since-checkpoint", f"the older report does not verify: {exc}")
        else:
            _check_since(check, since_note, note_key, tree, previous)
    try:
        _check_sites(check, predicate, tree)
    except _MALFORMED as exc:
        check.fail("samples", f"the report's sites or samples are malformed: {exc}")
    entity = predicate.get("entity")
    check.facts["entity"] = entity.get("id") if isinstance(entity, Mapping) else None
    check.facts["period"] = predicate.get("period")
    return check
