"""`serve` with `landmark = ...` whose port cannot be bound: a one-line refusal and exit 3, never
a traceback from the half-started verifier (docs/protocol.md §12, `gpu-attest-verifier --help`)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.verifier.sim import REPO, free_port
from verifier.exits import VerifierExit


@pytest.mark.parametrize("workers", [1, 2])
def test_a_landmark_port_in_use_ends_serve_with_exit_3_and_no_traceback(
    tmp_path: Path, workers: int
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        landmark = tmp_path / "landmark.toml"
        landmark.write_text(
            f'id = "lm-fra"\nlat = 50.11\nlon = 8.68\nlisten = "127.0.0.1:{port}"\n'
            f'state_dir = "{tmp_path / "state" / "landmark"}"\nmetrics_listen = ""\n'
        )
        config = tmp_path / "verifier.toml"
        config.write_text(
            f'listen = "127.0.0.1:{free_port()}"\nenroll_listen = "127.0.0.1:{free_port()}"\n'
            f'state_dir = "{tmp_path / "state"}"\nmetrics_listen = ""\n'
            f'landmark = "{landmark}"\nworkers = {workers}\n'
        )
        argv = [sys.executable, "-m", "verifier.cli", "--config", str(config), "serve"]
        done = subprocess.run(
            argv, cwd=REPO, capture_output=True, text=True, timeout=60, check=False
        )
    assert done.returncode == VerifierExit.CONFIG, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert "never awaited" not in done.stderr, done.stderr
    assert (
        f"gpu-attest-verifier: configuration: landmark listen = '127.0.0.1:{port}': cannot "
        "listen there (the port is in use, or the address is not one of this host's)"
    ) in done.stderr.splitlines()
