"""Tampering with a real report: a changed byte of the signed report, of an embedded entry, of
a proof or of a checkpoint makes `verify_report` fail with a line that says what failed, also
when the verifier itself re-signs the tampered statement with its report key; a log that
rewrote an entry between two reports fails the consistency check."""

from __future__ import annotations

import base64
import contextlib
import io
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attest import checkpoint as cp
from attest import merkle
from attest.errors import DecodeError
from attest.keys import PublicKey, SoftwareSigner, load_private_key
from attest.report_entries import fields
from attest.report_verify import encode_report, verify_report
from tests.verifier.test_compliance_cli import ROOT, agent_envelopes
from verifier.cli import main

REGISTRY = ROOT / "examples/registry.toml"

Report = tuple[bytes, SoftwareSigner, SoftwareSigner]  # report, report key, log key


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Report:
    """One real report (module scope: hypothesis draws many examples from it)."""
    tmp_path = tmp_path_factory.mktemp("report")
    config = tmp_path / "verifier.toml"
    config.write_text(
        f'state_dir = "{tmp_path / "state"}"\ndatabase = "{tmp_path / "v.db"}"\n'
        'listen = "0.0.0.0:0"\nmetrics_listen = ""\n'
    )
    month = datetime.now(UTC).strftime("%Y-%m")
    out = tmp_path / "r.json"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["--config", str(config), "registry", "import", str(REGISTRY)]) == 0
        assert main(["--config", str(config), "ingest", *agent_envelopes(tmp_path, config, 2)]) == 0
        argv = ["report", "create", "--entity", "acme", "--period", month, "--out", str(out)]
        assert main(["--config", str(config), *argv]) == 0
    state = tmp_path / "state"
    return (
        out.read_bytes(),
        load_private_key(state / "report.key"),
        load_private_key(state / "receipt.key"),
    )


def _statement(data: bytes) -> dict[str, Any]:
    return dict(json.loads(base64.b64decode(json.loads(data)["payload"])))


def _resign(statement: dict[str, Any], signer: SoftwareSigner) -> bytes:
    payload = json.dumps(statement, sort_keys=True, separators=(",", ":")).encode()
    return encode_report(payload, signer.sign, signer.public_key.keyid)


def _checks(data: bytes, key: PublicKey) -> set[str]:
    return {what for what, _ in verify_report(data, key).failures}


def test_the_untouched_report_verifies(made: Report) -> None:
    data, signer, _ = made
    assert verify_report(data, signer.public_key).failures == []


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_any_changed_payload_byte_fails_the_report_signature(made: Report, data: Any) -> None:
    raw, signer, _ = made
    document = json.loads(raw)
    payload = bytearray(base64.b64decode(document["payload"]))
    index = data.draw(st.integers(0, len(payload) - 1))
    payload[index] ^= data.draw(st.integers(1, 255))
    document["payload"] = base64.b64encode(bytes(payload)).decode()
    assert _checks(json.dumps(document).encode(), signer.public_key) == {"report-signature"}


@settings(max_examples=80, deadline=None)
@given(st.data())
def test_any_changed_byte_of_the_file_fails(made: Report, data: Any) -> None:
    raw, signer, _ = made
    changed = bytearray(raw)
    changed[data.draw(st.integers(0, len(raw) - 1))] ^= data.draw(st.integers(1, 255))
    failures = verify_report(bytes(changed), signer.public_key).failures
    assert [what for what, _ in failures] == ["report-signature"], failures


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_any_changed_checkpoint_or_proof_byte_fails_even_resigned(made: Report, data: Any) -> None:
    """The verifier's own report key cannot cover a changed checkpoint or inclusion proof."""
    raw, signer, _ = made
    statement = _statement(raw)
    predicate = statement["predicate"]
    if data.draw(st.booleans()):
        text = bytearray(predicate["log"]["checkpoint"].encode())
        text[data.draw(st.integers(0, len(text) - 1))] ^= data.draw(st.integers(1, 127))
        predicate["log"]["checkpoint"] = text.decode("utf-8", "replace")
        expected = "checkpoint"
    else:
        hashes = predicate["samples"][0]["inclusion"]
        which = data.draw(st.integers(0, len(hashes) - 1))
        digest = bytearray(bytes.fromhex(hashes[which]))
        digest[data.draw(st.integers(0, 31))] ^= data.draw(st.integers(1, 255))
        hashes[which] = digest.hex()
        expected = "inclusion"
    assert expected in _checks(_resign(statement, signer), signer.public_key)


def _flip_b64(text: str, index: int) -> str:
    raw = bytearray(base64.b64decode(text))
    raw[index % len(raw)] ^= 1
    return base64.b64encode(bytes(raw)).decode()


def _flip_hex(text: str) -> str:
    return ("0" if text[0] != "0" else "1") + text[1:]


Tamper = Callable[[dict[str, Any], int], None]


def _entry(p: dict[str, Any], i: int) -> None:
    sample = p["samples"][0]
    sample["envelope"] = _flip_b64(sample["envelope"], i)


def _proof(p: dict[str, Any], _i: int) -> None:
    sample = p["samples"][0]
    sample["inclusion"][0] = _flip_hex(sample["inclusion"][0])


def _checkpoint(p: dict[str, Any], _i: int) -> None:
    lines = p["log"]["checkpoint"].split("\n")
    lines[1] = str(int(lines[1]) + 1)
    p["log"]["checkpoint"] = "\n".join(lines)


def _totals(p: dict[str, Any], _i: int) -> None:
    for site in p["sites"]:
        if site["units"]:
            site["units"] -= 1
            site["models"][0]["units"] -= 1


def _choice(p: dict[str, Any], _i: int) -> None:
    """Candidates that the checkpoint root would not lead to the sampled entry."""
    for site in p["sites"]:
        if site["units"]:
            site["evidence_candidates"] = [p["samples"][0]["log_index"] + 1000]


def _dropped(p: dict[str, Any], _i: int) -> None:
    p["samples"] = []


def _agent_key(p: dict[str, Any], _i: int) -> None:
    p["samples"][0]["agent_keys"] = [p["log"]["public_key"].split("\n")[1]]


@pytest.mark.parametrize(
    ("tamper", "expected"),
    [
        (_choice, {"sample-choice"}),
        (_dropped, {"samples"}),
        (_agent_key, {"agent-signature"}),
        (_entry, {"inclusion", "agent-signature"}),
        (_proof, {"inclusion"}),
        (_checkpoint, {"checkpoint"}),
        (_totals, {"totals"}),
    ],
)
def test_a_resigned_tampered_statement_fails_the_check_it_breaks(
    made: Report, tamper: Tamper, expected: set[str]
) -> None:
    """The verifier holding the report key still cannot change an entry, a proof, the
    checkpoint or the totals an entry supports without the check naming it."""
    raw, signer, _ = made
    statement = _statement(raw)
    tamper(statement["predicate"], 7)
    failed = _checks(_resign(statement, signer), signer.public_key)
    assert failed & expected, failed


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_any_changed_entry_byte_fails_inclusion(made: Report, data: Any) -> None:
    raw, signer, _ = made
    statement = _statement(raw)
    sample = statement["predicate"]["samples"][0]
    entry = bytearray(base64.b64decode(sample["envelope"]))
    entry[data.draw(st.integers(0, len(entry) - 1))] ^= data.draw(st.integers(1, 255))
    sample["envelope"] = base64.b64encode(bytes(entry)).decode()
    assert "inclusion" in _checks(_resign(statement, signer), signer.public_key)


@given(st.binary(max_size=200))
def test_the_protobuf_reader_takes_any_bytes_without_crashing(raw: bytes) -> None:
    with contextlib.suppress(DecodeError):
        fields(raw)


def test_a_rewritten_log_fails_consistency(made: Report) -> None:
    """A previous checkpoint with another root for the same size: a log that rewrote history."""
    raw, signer, _ = made
    statement = _statement(raw)
    log = statement["predicate"]["log"]
    log["previous"] = {"checkpoint": log["checkpoint"], "consistency": ["00" * 32]}
    assert "consistency" in _checks(_resign(statement, signer), signer.public_key)


@settings(max_examples=30, deadline=None)
@given(st.integers(4, 12), st.data())
def test_a_log_that_dropped_or_rewrote_an_entry_fails_consistency(
    made: Report, size: int, data: Any
) -> None:
    """Between two reports the log lost (or changed) one entry and grew on: no consistency
    proof of the new log leads from the old checkpoint."""
    raw, signer, log_signer = made
    leaves = [merkle.leaf_hash(bytes([i])) for i in range(size)]
    old_size = data.draw(st.integers(2, size - 1))
    victim = data.draw(st.integers(0, old_size - 1))
    if data.draw(st.booleans()):
        changed = [*leaves[:victim], *leaves[victim + 1 :], merkle.leaf_hash(b"new")]
    else:
        changed = [*leaves[:victim], merkle.leaf_hash(b"rewritten"), *leaves[victim + 1 :]]
    statement = _statement(raw)
    log = statement["predicate"]["log"]
    origin = log["origin"]
    old = cp.Checkpoint(origin, old_size, merkle.root(leaves[:old_size]))
    new = cp.Checkpoint(origin, len(changed), merkle.root(changed))
    log["checkpoint"] = cp.sign_checkpoint(new, origin, log_signer).decode()
    log["previous"] = {
        "checkpoint": cp.sign_checkpoint(old, origin, log_signer).decode(),
        "consistency": [h.hex() for h in merkle.consistency_proof(old_size, len(changed), changed)],
    }
    failures = verify_report(_resign(statement, signer), signer.public_key).failures
    assert "consistency" in {what for what, _ in failures}, failures
    assert any("not consistent" in line for _, line in failures)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            out += _paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            out += _paths(item, (*path, index))
    return out


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_a_signed_but_malformed_predicate_never_crashes_verify(made: Report, data: Any) -> None:
    """Any value of the predicate replaced by any JSON, re-signed: verify reports, never raises."""
    raw, signer, _ = made
    statement = _statement(raw)
    paths = [p for p in _paths(statement["predicate"]) if p]
    path = data.draw(st.sampled_from(paths))
    parent = statement["predicate"]
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = data.draw(_JSON)
    check = verify_report(_resign(statement, signer), signer.public_key)
    assert all(isinstance(line, str) for _, line in check.failures)
