"""`log checkpoint|proof|consistency` read the stored Merkle nodes, not every leaf
(docs/design.md §9): with the leaf rows they do not need removed, they still answer, and what
they answer still verifies offline; with a node removed they fail closed (exit 4)."""

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


def test_log_commands_need_no_leaf_but_their_own(
    capsys: pytest.CaptureFixture[str], config_file: Path, tmp_path: Path
) -> None:
    _log_some(config_file, tmp_path, 7)
    base = ["--config", str(config_file), "log"]
    key, before, after = tmp_path / "log.pub", tmp_path / "before.cp", tmp_path / "after.cp"
    assert main([*base, "key", "--out", str(key)]) == VerifierExit.OK
    assert main([*base, "checkpoint", "--out", str(before)]) == VerifierExit.OK
    # Entry 6's proof needs no leaf but its own (its siblings are nodes): every other leaf
    # row goes. A command that read all leaves would now fail or sign another root.
    _sql(config_file, "DELETE FROM log_entries WHERE log_index <> 6")
    assert main([*base, "checkpoint", "--out", str(after)]) == VerifierExit.OK
    assert before.read_bytes().split(b"\n")[:3] == after.read_bytes().split(b"\n")[:3]
    proof = tmp_path / "6.tlog-proof"
    assert main([*base, "proof", "--index", "6", "--out", str(proof)]) == VerifierExit.OK
    assert report_main(["proof", "verify", str(proof), "--key", str(key)]) == ReportExit.VALID
    grew, new = tmp_path / "grew.proof", tmp_path / "new.cp"
    args = [*base, "consistency", "--from", "4", "--checkpoint", str(new), "--out", str(grew)]
    assert main(args) == VerifierExit.OK
    capsys.readouterr()
    # A missing node is a store failure, said as such, never a guessed root.
    _sql(config_file, "DELETE FROM log_nodes WHERE level = 2")
    assert main([*base, "checkpoint"]) == VerifierExit.STORE
    assert "Merkle tree lacks" in capsys.readouterr().err
