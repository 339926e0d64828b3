"""Deterministic generator of the DSSE / evidence test vectors in tests/vectors/.

Usage (from the repository root):
    .venv/bin/python -m tests.vectors.generate          # rewrite the vector files
    .venv/bin/python -m tests.vectors.generate --check  # exit 1 when the files are stale

Keys come from fixed seeds: Ed25519 from 32 seed bytes, P-256 from a fixed scalar. P-256
signatures use RFC 6979 deterministic ECDSA, so every run writes the same bytes. The private
keys are NOT test secrets worth protecting: anyone can rederive them from this file.

Each vector NAME is `NAME.envelope` (a serialized attest.v1.Envelope, exactly as sent on the
wire) and `NAME.json`, its manifest: which keys to trust, the payload type to expect, and
either `"expect": "ok"` or `"expect": "error"` with the attest.errors class the verifier path
(wire.decode_envelope, envelope.verify, wire.decode_evidence) must raise. Negative vectors are
named after the attack they model.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from attest import envelope, wire
from attest.envelope import Envelope, EnvelopeSignature
from attest.keys import P256_ORDER, PublicKey, SoftwareSigner, ecdsa_low_s
from tests.attest.factories import full_evidence

VECTORS_DIR = Path(__file__).resolve().parent
EVIDENCE = envelope.EVIDENCE_PAYLOAD_TYPE
TRUSTED_KEYS = ["ed25519.pub.pem", "p256.pub.pem"]


def _seed(label: str) -> bytes:
    return hashlib.sha256(b"gpu-attest test vectors: " + label.encode()).digest()


@dataclasses.dataclass(frozen=True)
class DeterministicP256Signer:
    """ES256 with RFC 6979 nonces (and low S, as every signer), so vectors are reproducible."""

    private_key: ec.EllipticCurvePrivateKey
    public_key: PublicKey

    def sign(self, data: bytes) -> bytes:
        der = self.private_key.sign(data, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
        return ecdsa_low_s(der)


def _ed25519(label: str) -> SoftwareSigner:
    return SoftwareSigner.from_private_key(
        ed25519.Ed25519PrivateKey.from_private_bytes(_seed(label))
    )


def _p256(label: str) -> DeterministicP256Signer:
    scalar = int.from_bytes(_seed(label)) % (P256_ORDER - 1) + 1
    key = ec.derive_private_key(scalar, ec.SECP256R1())
    return DeterministicP256Signer(key, SoftwareSigner.from_private_key(key).public_key)


ED = _ed25519("ed25519 signer")
P256 = _p256("p256 signer")
STRANGER = _ed25519("untrusted ed25519 signer")


def _manifest(description: str, error: str | None, **extra: object) -> dict[str, object]:
    manifest: dict[str, object] = {
        "description": description,
        "payload_type": EVIDENCE,
        "trusted_keys": TRUSTED_KEYS,
        "expect": "error" if error else "ok",
    }
    if error:
        manifest["error"] = error
    manifest.update(extra)
    return manifest


def _sign(payload: bytes, *signers: object, payload_type: str = EVIDENCE) -> Envelope:
    return envelope.sign(payload_type, payload, signers)  # type: ignore[arg-type]


def _replace(env: Envelope, **changes: object) -> Envelope:
    return dataclasses.replace(env, **changes)  # type: ignore[arg-type]


def _high_s_twin(env: Envelope) -> Envelope:
    r, s = decode_dss_signature(env.signatures[0].sig)
    twin = EnvelopeSignature(env.signatures[0].keyid, encode_dss_signature(r, P256_ORDER - s))
    return _replace(env, signatures=(twin,))


Vector = tuple[bytes, dict[str, object]]


def _envelope_vectors(payload: bytes) -> dict[str, Vector]:
    ed, p256 = _sign(payload, ED), _sign(payload, P256)
    flipped = bytearray(payload)
    flipped[len(flipped) // 2] ^= 0x01
    bad_evidence = dataclasses.replace(
        full_evidence(gpus=2),
        gpus=(full_evidence(gpus=1).gpus[0], full_evidence(gpus=1).gpus[0]),
    )
    stranger_sig = _sign(payload, STRANGER).signatures[0]
    enc = wire.encode_envelope
    table: dict[str, tuple[bytes, str, str | None]] = {
        "valid-ed25519": (enc(ed), "evidence signed by the trusted Ed25519 key", None),
        "valid-p256": (enc(p256), "evidence signed by the trusted P-256 key (ES256)", None),
        "valid-two-signatures": (enc(_sign(payload, ED, P256)), "both trusted keys sign", None),
        "flipped-payload-byte": (
            enc(_replace(ed, payload=bytes(flipped))),
            "one payload bit changed in flight",
            "BadSignatureError",
        ),
        "truncated-payload": (
            enc(_replace(ed, payload=payload[:-7])),
            "payload cut short, signature kept",
            "BadSignatureError",
        ),
        "wrong-payload-type": (
            enc(_sign(payload, ED, payload_type=envelope.RECEIPT_PAYLOAD_TYPE)),
            "a correctly signed envelope of another type (type confusion)",
            "PayloadTypeError",
        ),
        "signature-by-unknown-key": (
            enc(_sign(payload, STRANGER)),
            "signed by a key nobody pinned",
            "UnknownKeyError",
        ),
        "extra-untrusted-signature": (
            enc(_replace(ed, signatures=(*ed.signatures, stranger_sig))),
            "a valid signature plus one by an unpinned key",
            "UnknownKeyError",
        ),
        "empty-signature-list": (
            enc(_replace(ed, signatures=())),
            "signatures stripped",
            "NoSignatureError",
        ),
        "duplicate-signature": (
            enc(_replace(ed, signatures=ed.signatures * 2)),
            "the same signature twice",
            "DuplicateSignatureError",
        ),
        "too-many-signatures": (
            enc(_replace(ed, signatures=ed.signatures * (envelope.MAX_SIGNATURES + 1))),
            "more signatures than the policy allows (CPU exhaustion)",
            "TooManySignaturesError",
        ),
        "keyid-of-other-trusted-key": (
            enc(
                _replace(
                    ed, signatures=(EnvelopeSignature(P256.public_key.keyid, ed.signatures[0].sig),)
                )
            ),
            "a signature filed under another trusted key's id",
            "BadSignatureError",
        ),
        "unknown-envelope-field": (
            enc(ed) + b"\x20\x01",
            "an unsigned field appended to the envelope",
            "DecodeError",
        ),
        "truncated-envelope": (enc(ed)[:-5], "the envelope bytes cut short", "DecodeError"),
        "signed-garbage-payload": (
            enc(_sign(b"\xff\xff\xff not protobuf", ED)),
            "a correctly signed payload that is not Evidence",
            "DecodeError",
        ),
        "signed-duplicate-gpu": (
            enc(_sign(wire.encode_evidence(bad_evidence), ED)),
            "correctly signed evidence that lists one GPU UUID twice",
            "InvariantError",
        ),
    }
    vectors = {name: (raw, _manifest(desc, err)) for name, (raw, desc, err) in table.items()}
    vectors["p256-high-s-twin"] = (
        enc(_high_s_twin(p256)),
        _manifest(
            "valid-p256 with s replaced by n - s: it verifies under plain ECDSA, so accepting it "
            "would give the same evidence a second envelope hash; only low S is accepted",
            "BadSignatureError",
        ),
    )
    return vectors


def build() -> dict[str, bytes]:
    """Every vector file name (relative to tests/vectors/) and its exact bytes."""
    files: dict[str, bytes] = {
        "ed25519.pub.pem": ED.public_key.to_pem(),
        "p256.pub.pem": P256.public_key.to_pem(),
        "untrusted-ed25519.pub.pem": STRANGER.public_key.to_pem(),
    }
    pae = {
        "description": "DSSE v1 pre-authentication encoding (secure-systems-lab/dsse)",
        "payload_type": "http://example.com/HelloWorld",
        "payload": "hello world",
        "pae": envelope.pae("http://example.com/HelloWorld", b"hello world").decode(),
    }
    files["pae.json"] = _json(pae)
    payload = wire.encode_evidence(full_evidence(gpus=2))
    files["evidence.pb"] = payload
    for name, (raw, manifest) in _envelope_vectors(payload).items():
        files[f"{name}.envelope"] = raw
        files[f"{name}.json"] = _json({"envelope": f"{name}.envelope", **manifest})
    return files


def _json(value: object) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True) + "\n").encode()


def stale_files(files: dict[str, bytes], directory: Path = VECTORS_DIR) -> list[str]:
    """Names whose committed bytes differ from `files`, plus committed vectors no longer made."""
    stale = [n for n, data in files.items() if not (directory / n).is_file()]
    stale += [
        n for n, data in files.items() if n not in stale and (directory / n).read_bytes() != data
    ]
    made = {".envelope", ".json", ".pem", ".pb"}
    extra = [p.name for p in directory.iterdir() if p.suffix in made and p.name not in files]
    return sorted(stale + extra)


def main(argv: list[str] | None = None) -> int:
    """Write the vectors, or with --check report stale ones (exit 1)."""
    parser = argparse.ArgumentParser(description="(re)generate tests/vectors")
    parser.add_argument("--check", action="store_true", help="exit 1 if the files are stale")
    opts = parser.parse_args(argv)
    files = build()
    if opts.check:
        stale = stale_files(files)
        print("vectors are fresh" if not stale else f"stale vectors: {stale}")
        return 1 if stale else 0
    for name, data in files.items():
        (VECTORS_DIR / name).write_bytes(data)
    print(f"wrote {len(files)} files to {VECTORS_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
