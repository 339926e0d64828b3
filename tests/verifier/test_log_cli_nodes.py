"""`log checkpoint|proof|consistency` read the stored Merkle nodes, not every leaf
(docs/design.md §9): with the leaf rows they do not need removed, they still answer, and what
they answer still verifies offline; with a node removed they fail closed (exit 4). Subtrees
below the stored levels are hashed from their leaves (at most 8 each), so those leaves stay."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from attest.exits import ReportExit
from attest.report_cli import main as report_main
from verifier.cli import main
from verifier.exits import VerifierExit

from .test_log_cli import _log_some


def _sql(config_file: Path, statement: str) -> None:
    with sqlite3.connect(config_file.parent / "v.db") as conn:
        conn.execute(statement)


def test_log_commands_need_no_leaf_but_the_newest(
    capsys: pytest.CaptureFixture[str], config_file: Path, tmp_path: Path
) -> None:
    _log_some(config_file, tmp_path, 37)
    base = ["--config", str(config_file), "log"]
    key, before, after = tmp_path / "log.pub", tmp_path / "before.cp", tmp_path / "after.cp"
    assert main([*base, "key", "--out", str(key)]) == VerifierExit.OK
    assert main([*base, "checkpoint", "--out", str(before)]) == VerifierExit.OK
    # The tree of 37 is the stored subtree of entries 0-31 (level 5), then entries 32-35
    # (level 2, hashed from its leaves) and 36: the leaf rows below 32 go. A command that read
    # all leaves would now fail or sign another root.
    _sql(config_file, "DELETE FROM attestations WHERE log_index < 32")
    assert main([*base, "checkpoint", "--out", str(after)]) == VerifierExit.OK
    assert before.read_bytes().split(b"\n")[:3] == after.read_bytes().split(b"\n")[:3]
    proof = tmp_path / "36.tlog-proof"
    assert main([*base, "proof", "--index", "36", "--out", str(proof)]) == VerifierExit.OK
    assert report_main(["proof", "verify", str(proof), "--key", str(key)]) == ReportExit.VALID
    grew, new = tmp_path / "grew.proof", tmp_path / "new.cp"
    args = [*base, "consistency", "--from", "32", "--checkpoint", str(new), "--out", str(grew)]
    assert main(args) == VerifierExit.OK
    capsys.readouterr()
    # A missing node is a store failure, said as such, never a guessed root.
    _sql(config_file, "DELETE FROM log_nodes WHERE level = 5")
    assert main([*base, "checkpoint"]) == VerifierExit.STORE
    assert "Merkle tree lacks" in capsys.readouterr().err
