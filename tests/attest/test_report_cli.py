"""gpu-attest-report: exit codes, key formats, and its promise to need neither gRPC nor protobuf."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from attest import checkpoint as cp
from attest import merkle
from attest.exits import ReportExit
from attest.keys import SoftwareSigner
from attest.report_cli import main

VALID, INVALID, USAGE = ReportExit.VALID, ReportExit.INVALID, ReportExit.USAGE
ORIGIN = "gpu-attest.example/log"
SIGNER = SoftwareSigner.from_private_key(ed25519.Ed25519PrivateKey.from_private_bytes(b"\x07" * 32))
OTHER = SoftwareSigner.from_private_key(ed25519.Ed25519PrivateKey.from_private_bytes(b"\x08" * 32))
LEAVES = [merkle.leaf_hash(b"entry-%d" % i) for i in range(20)]


def _checkpoint(n: int, signer: SoftwareSigner = SIGNER) -> bytes:
    return cp.sign_checkpoint(cp.Checkpoint(ORIGIN, n, merkle.root(LEAVES[:n])), ORIGIN, signer)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    paths = {
        "pem": SIGNER.public_key.to_pem(),
        "b64": SIGNER.public_key.to_base64().encode() + b"\n",
        "vkey": cp.NoteKey(ORIGIN, SIGNER.public_key).vkey().encode(),
        "other": OTHER.public_key.to_pem(),
        "old": _checkpoint(7),
        "new": _checkpoint(20),
        "forged": _checkpoint(20, OTHER),
        "consistency": cp.ConsistencyProof(
            7, 20, merkle.consistency_proof(7, 20, LEAVES)
        ).to_bytes(),
        "proof": cp.TlogProof(
            3, merkle.inclusion_proof(3, 20, LEAVES), _checkpoint(20), b"entry-3"
        ).to_bytes(),
        "bare-proof": cp.TlogProof(
            3, merkle.inclusion_proof(3, 20, LEAVES), _checkpoint(20)
        ).to_bytes(),
        "entry": b"entry-3",
        "garbage": b"\x00\xffnot a checkpoint",
    }
    out = {}
    for name, data in paths.items():
        path = tmp_path / name
        path.write_bytes(data)
        out[name] = str(path)
    return out


@pytest.mark.parametrize("key", ["pem", "b64", "vkey"])
def test_checkpoint_verify_valid(files: dict[str, str], key: str) -> None:
    assert main(["checkpoint", "verify", files["new"], "--key", files[key]]) == VALID


def test_checkpoint_verify_json(files: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--json", "checkpoint", "verify", files["new"], "--key", files["pem"]]
    assert main([*argv, "--origin", ORIGIN]) == VALID
    out = json.loads(capsys.readouterr().out)
    assert out["valid"] is True
    assert out["checkpoint"] == {"origin": ORIGIN, "size": 20, "root": merkle.root(LEAVES).hex()}
    assert (
        main(["checkpoint", "verify", files["forged"], "--key", files["pem"], "--json"]) == INVALID
    )
    out = json.loads(capsys.readouterr().out)
    assert out == {"valid": False, "code": "proof-invalid", "error": out["error"]}
    assert main(["checkpoint", "verify", files["new"], "--key", files["pem"]]) == VALID
    assert capsys.readouterr().out.startswith("VALID\n")


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["checkpoint", "verify", "{forged}", "--key", "{pem}"], INVALID),
        (["checkpoint", "verify", "{new}", "--key", "{other}"], INVALID),
        (["checkpoint", "verify", "{new}", "--key", "{pem}", "--origin", "x.example"], INVALID),
        (["checkpoint", "verify", "{garbage}", "--key", "{pem}"], INVALID),
        (["checkpoint", "verify", "{new}", "--key", "{garbage}"], USAGE),
        (["checkpoint", "verify", "/nonexistent", "--key", "{pem}"], USAGE),
        (["checkpoint", "verify", "{new}"], USAGE),
        (["checkpoint", "verify", "{new}", "--key", "{vkey}", "--key-name", "x"], USAGE),
        (["proof", "verify", "{proof}", "--key", "{pem}"], VALID),
        (["proof", "verify", "{bare-proof}", "--key", "{pem}", "--entry", "{entry}"], VALID),
        (["proof", "verify", "{bare-proof}", "--key", "{pem}"], USAGE),
        (["proof", "verify", "{proof}", "--key", "{pem}", "--entry", "{garbage}"], INVALID),
        (["proof", "verify", "{proof}", "--key", "{other}"], INVALID),
        (["proof", "verify", "{garbage}", "--key", "{pem}"], INVALID),
        (["consistency", "{old}", "{new}", "--proof", "{consistency}", "--key", "{pem}"], VALID),
        (["consistency", "{new}", "{old}", "--proof", "{consistency}", "--key", "{pem}"], INVALID),
        (
            ["consistency", "{old}", "{forged}", "--proof", "{consistency}", "--key", "{b64}"],
            INVALID,
        ),
        (["consistency", "{old}", "{new}", "--proof", "{garbage}", "--key", "{pem}"], INVALID),
        (["verify", "{new}", "--key", "{pem}"], INVALID),  # a checkpoint is not a report
        (["verify", "{new}", "--key", "{garbage}"], USAGE),
        (["frobnicate"], USAGE),
        ([], USAGE),
    ],
)
def test_exit_codes(files: dict[str, str], argv: list[str], code: int) -> None:
    assert main([arg.format(**files) for arg in argv]) == code


def test_verify_says_what_failed(files: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    """Reports themselves: tests/attest/test_report_verify.py, tests/verifier/test_report_cli.py."""
    assert main(["verify", files["new"], "--key", files["pem"]]) == INVALID
    assert "INVALID (report-signature): the report does not verify" in capsys.readouterr().err


def test_needs_neither_grpc_nor_protobuf(files: dict[str, str]) -> None:
    script = (
        "import sys\n"
        "from attest.report_cli import main\n"
        f"code = main(['checkpoint', 'verify', {files['new']!r}, '--key', {files['pem']!r}])\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('grpc', 'google'))\n"
        "print(code, heavy)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip().endswith("0 []")
