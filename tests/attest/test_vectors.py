"""The committed vectors in tests/vectors/: fresh, and each one gets exactly its verdict."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from attest import envelope, errors, wire
from attest.keys import PublicKey
from tests.vectors import generate

VECTORS = generate.VECTORS_DIR
MANIFESTS = sorted(p for p in VECTORS.glob("*.json") if p.name != "pae.json")
REQUIRED = {
    "flipped-payload-byte",
    "wrong-payload-type",
    "signature-by-unknown-key",
    "truncated-payload",
    "empty-signature-list",
    "valid-ed25519",
    "valid-p256",
}


def test_committed_vectors_equal_the_generator_output() -> None:
    stale = generate.stale_files(generate.build())
    assert stale == [], "run: .venv/bin/python -m tests.vectors.generate"


def test_required_vectors_exist() -> None:
    assert {p.stem for p in MANIFESTS} >= REQUIRED


def test_pae_vector() -> None:
    vector = json.loads((VECTORS / "pae.json").read_text())
    assert vector["pae"] == "DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    got = envelope.pae(vector["payload_type"], vector["payload"].encode())
    assert got == vector["pae"].encode()


def _run(manifest: dict[str, object]) -> None:
    raw = (VECTORS / str(manifest["envelope"])).read_bytes()
    trusted = {}
    for name in manifest["trusted_keys"]:  # type: ignore[attr-defined]
        key = PublicKey.from_pem((VECTORS / name).read_bytes())
        trusted[key.keyid] = key
    verified = envelope.verify(wire.decode_envelope(raw), str(manifest["payload_type"]), trusted)
    wire.decode_evidence(verified.payload)


@pytest.mark.parametrize("path", MANIFESTS, ids=[p.stem for p in MANIFESTS])
def test_vector(path: Path) -> None:
    manifest = json.loads(path.read_text())
    if manifest["expect"] == "ok":
        _run(manifest)
        return
    expected = getattr(errors, manifest["error"])
    with pytest.raises(errors.AttestError) as caught:
        _run(manifest)
    assert type(caught.value) is expected, f"{path.stem}: {caught.value!r}"
