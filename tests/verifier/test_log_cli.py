"""`gpu-attest-verifier log key|checkpoint|proof` against a real store, checked by the regulator's
`gpu-attest-report` exactly as a regulator would run it: files and a public key, nothing else."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from attest.exits import ReportExit
from attest.report_cli import main as report_main
from tests.verifier.helpers import Chain
from verifier.cli import main
from verifier.exits import VerifierExit

from .test_cli import _enroll_direct


def _log_some(config_file: Path, tmp_path: Path, count: int) -> None:
    agent_id, signer = _enroll_direct(config_file)
    chain = Chain(agent_id, signer)
    now = datetime.now(UTC)
    files = []
    for index in range(count):
        path = tmp_path / f"e{index}.dsse"
        path.write_bytes(chain.next(b"", now - timedelta(minutes=count - index)))
        files.append(str(path))
    assert main(["--config", str(config_file), "ingest", *files]) == VerifierExit.OK


def test_log_proofs_verify_offline(
    capsys: pytest.CaptureFixture[str], config_file: Path, tmp_path: Path
) -> None:
    # No state yet: said as such (exit 3), and nothing is created.
    assert (
        main(["log", "proof", "--index", "0", "--config", str(config_file)]) == VerifierExit.CONFIG
    )
    assert "no verifier state" in capsys.readouterr().err
    assert not (tmp_path / "v.db").exists()
    _enroll_direct(config_file)
    assert (
        main(["log", "proof", "--index", "0", "--config", str(config_file)]) == VerifierExit.REFUSED
    )
    assert "empty" in capsys.readouterr().err
    _log_some(config_file, tmp_path, 5)
    key, checkpoint = tmp_path / "log.pub", tmp_path / "log.checkpoint"
    assert main(["--config", str(config_file), "log", "key", "--out", str(key)]) == VerifierExit.OK
    assert (
        main(["--config", str(config_file), "log", "checkpoint", "--out", str(checkpoint)])
        == VerifierExit.OK
    )
    assert (
        report_main(["checkpoint", "verify", str(checkpoint), "--key", str(key)])
        == ReportExit.VALID
    )
    for index in range(5):
        proof = tmp_path / f"{index}.tlog-proof"
        args = ["--config", str(config_file), "log", "proof", "--index", str(index)]
        assert main([*args, "--out", str(proof)]) == VerifierExit.OK
        assert report_main(["proof", "verify", str(proof), "--key", str(key)]) == ReportExit.VALID
        # The proof pins the entry's position: claim another index and it no longer verifies.
        tampered = proof.read_bytes().replace(b"\nindex ", b"\nindex 1", 1)
        proof.write_bytes(tampered)
        assert report_main(["proof", "verify", str(proof), "--key", str(key)]) != 0
    capsys.readouterr()
    assert (
        main(["--config", str(config_file), "log", "proof", "--index", "5"]) == VerifierExit.REFUSED
    )
    assert "outside the log" in capsys.readouterr().err


def test_log_consistency_verifies_offline(config_file: Path, tmp_path: Path) -> None:
    """The regulator keeps an old checkpoint; a later one plus a proof shows the log only grew."""
    agent_id, signer = _enroll_direct(config_file)
    chain = Chain(agent_id, signer)
    now = datetime.now(UTC)
    key, old, new = tmp_path / "log.pub", tmp_path / "old.cp", tmp_path / "new.cp"
    proof = tmp_path / "grew.proof"
    base = ["--config", str(config_file)]

    def ingest(count: int) -> None:
        files = []
        for _ in range(count):
            path = tmp_path / f"e{chain.seq}.dsse"
            path.write_bytes(chain.next(b"", now - timedelta(minutes=30 - chain.seq)))
            files.append(str(path))
        assert main([*base, "ingest", *files]) == VerifierExit.OK

    ingest(3)
    assert main([*base, "log", "key", "--out", str(key)]) == VerifierExit.OK
    assert main([*base, "log", "checkpoint", "--out", str(old)]) == VerifierExit.OK
    ingest(4)
    args = [*base, "log", "consistency", "--from", "3", "--checkpoint", str(new)]
    assert main([*args, "--out", str(proof)]) == VerifierExit.OK
    verify = ["consistency", str(old), str(new), "--proof", str(proof), "--key", str(key)]
    assert report_main(verify) == ReportExit.VALID
    # Checkpoints in the wrong order (a log that "shrank") are refused.
    assert (
        report_main(["consistency", str(new), str(old), "--proof", str(proof), "--key", str(key)])
        != 0
    )
    assert main([*base, "log", "consistency", "--from", "8", "--checkpoint", str(new)]) == 1
