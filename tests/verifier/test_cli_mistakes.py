"""A new operator's mistakes and a careless environment, through the real `gpu-attest-verifier`
process: each ends in one clear line and the documented exit code, and none leaves state
behind that no one asked for (issue 12, items 7, 9-12, 14, 15)."""

from __future__ import annotations

import json
import os
import resource
import socket
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.verifier.sim import REPO
from verifier.config import DEFAULT_CONFIG_PATH
from verifier.exits import VerifierExit

#: Generous: a CLI run takes about a second; this only stops a hang from hanging the suite.
DEADLINE_S = 120


def cli(
    config: Path | None,
    *args: str,
    umask: int | None = None,
    stdout: int | None = subprocess.PIPE,
    limit_memory: int | None = None,
) -> subprocess.CompletedProcess[str]:
    def child_setup() -> None:
        if umask is not None:
            os.umask(umask)
        if limit_memory is not None:
            resource.setrlimit(resource.RLIMIT_AS, (limit_memory, limit_memory))

    before = [] if config is None else ["--config", str(config)]
    return subprocess.run(
        [sys.executable, "-m", "verifier.cli", *before, *args],
        cwd=REPO, stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=DEADLINE_S,
        preexec_fn=child_setup, check=False,
    )  # fmt: skip


def write_config(tmp_path: Path, extra: str = "", *, state: str = "state") -> Path:
    """A config whose database is the default one: STATE_DIR/verifier.db."""
    path = tmp_path / "verifier.toml"
    path.write_text(
        f'state_dir = "{tmp_path / state}"\nlisten = "127.0.0.1:0"\n'
        f'enroll_listen = "127.0.0.1:0"\nmetrics_listen = ""\n{extra}'
    )
    return path


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# --- item 7: token create --json ---------------------------------------------------------------


def test_token_create_json_reports_the_token_it_stored(tmp_path: Path) -> None:
    done = cli(write_config(tmp_path), "token", "create", "--site", "fra1", "--json")
    assert done.returncode == VerifierExit.OK, done.stderr
    shown = json.loads(done.stdout)
    assert shown["token"].startswith("gat1_") and shown["site_id"] == "fra1"
    assert shown["expires_at"].endswith("Z")


# --- item 14: bad flag values are usage errors -------------------------------------------------


@pytest.mark.parametrize("ttl", ["45d", "0s", "1y", "-1h"])
def test_token_ttl_out_of_range_is_a_usage_error_and_stores_nothing(
    tmp_path: Path, ttl: str
) -> None:
    config = write_config(tmp_path)
    done = cli(config, "token", "create", "--site", "fra1", f"--ttl={ttl}")
    assert done.returncode == VerifierExit.USAGE
    assert done.stdout == "" and "0:00:00" not in done.stderr
    assert "--ttl" in done.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "state").exists()


# --- item 9: ingest reads at most the limit ----------------------------------------------------


def test_ingest_refuses_what_is_not_a_regular_file(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    assert cli(config, "token", "create", "--site", "fra1").returncode == VerifierExit.OK
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    done = cli(config, "ingest", "--json", "/dev/zero", str(fifo), str(tmp_path), "missing.dsse")
    assert done.returncode == VerifierExit.REFUSED, done.stderr
    rows = json.loads(done.stdout)
    assert [r["code"] for r in rows] == ["input-unreadable"] * 4
    assert "not a regular file" in rows[0]["message"]


def test_ingest_of_a_huge_file_reads_only_the_limit(tmp_path: Path) -> None:
    config = write_config(tmp_path, "[stream]\nmax_message_bytes = 4096\n")
    assert cli(config, "token", "create", "--site", "fra1").returncode == VerifierExit.OK
    huge = tmp_path / "huge.dsse"
    with huge.open("wb") as handle:
        handle.truncate(6 * 1024**3)  # sparse: no disk used
    # Reading it whole needs 6 GiB; under a 3 GiB address-space limit that fails at once.
    done = cli(config, "ingest", "--json", str(huge), limit_memory=3 * 1024**3)
    assert done.returncode == VerifierExit.REFUSED, done.stderr
    (row,) = json.loads(done.stdout)
    assert row["code"] == "size-limit" and "4096" in row["message"]


# --- item 10: state is private whatever the umask ----------------------------------------------


def test_state_is_private_under_umask_000(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    done = cli(config, "ca", "export", umask=0o000)
    assert done.returncode == VerifierExit.OK, done.stderr
    state = tmp_path / "state"
    assert mode(state) == 0o700 and mode(state / "ca.key") == 0o600
    assert cli(config, "token", "create", "--site", "a", umask=0o000).returncode == 0
    assert mode(state / "verifier.db") == 0o600


def test_a_new_database_is_0600_under_umask_022(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    assert cli(config, "token", "create", "--site", "a", umask=0o022).returncode == 0
    assert mode(tmp_path / "state") == 0o700
    assert mode(tmp_path / "state" / "verifier.db") == 0o600


@pytest.mark.parametrize(
    "command", [["agents"], ["ca", "export"], ["token", "create", "--site", "a"]]
)
def test_a_state_dir_open_to_others_is_refused(tmp_path: Path, command: list[str]) -> None:
    config = write_config(tmp_path)
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o755)
    done = cli(config, *command)
    assert done.returncode == VerifierExit.CONFIG and done.stdout == ""
    line = one_line(done.stderr)
    assert str(state) in line and "0755" in line
    assert list(state.iterdir()) == []


# --- item 11: nan and inf ----------------------------------------------------------------------


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_serve_refuses_a_non_finite_rate(tmp_path: Path, value: str) -> None:
    done = cli(write_config(tmp_path, f"[stream]\nrate_per_s = {value}\n"), "serve")
    assert done.returncode == VerifierExit.CONFIG
    assert "rate_per_s" in one_line(done.stderr) and "finite" in done.stderr


@pytest.mark.parametrize(("key", "value"), [("lat", "nan"), ("lon", "inf"), ("lat", "91.0")])
def test_registry_import_refuses_a_non_finite_or_out_of_range_coordinate(
    tmp_path: Path, key: str, value: str
) -> None:
    registry = tmp_path / "registry.toml"
    coordinates = {"lat": "50.1", "lon": "8.6", key: value}
    registry.write_text(
        '[[entity]]\nid = "acme"\nname = "Acme"\nhq_country = "DE"\nveu = "none"\n'
        '[[site]]\nid = "fra1"\nentity = "acme"\ncountry = "DE"\n'
        + "".join(f"{k} = {v}\n" for k, v in coordinates.items())
    )
    done = cli(write_config(tmp_path), "registry", "import", str(registry))
    assert done.returncode == VerifierExit.CONFIG
    assert key in one_line(done.stderr)


def test_registry_import_of_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    done = cli(write_config(tmp_path), "registry", "import", str(tmp_path / "missing.toml"))
    assert done.returncode == VerifierExit.CONFIG
    assert "does not exist" in one_line(done.stderr)


# --- item 12: a wrong or missing config --------------------------------------------------------

READERS = [
    ["agents"], ["fleet"], ["findings"], ["registry", "show"], ["log", "key"],
    ["agent", "revoke", "agt-x"],
]  # fmt: skip


@pytest.mark.parametrize("command", READERS, ids=" ".join)
def test_reading_a_state_without_database_fails_and_creates_nothing(
    tmp_path: Path, command: list[str]
) -> None:
    config = write_config(tmp_path, state="elsewhere")
    done = cli(config, *command)
    assert done.returncode == VerifierExit.CONFIG and done.stdout == ""
    line = one_line(done.stderr)
    assert f"no verifier state at {tmp_path / 'elsewhere' / 'verifier.db'}" in line
    assert not (tmp_path / "elsewhere").exists()


@pytest.mark.skipif(DEFAULT_CONFIG_PATH.exists(), reason="this host has a verifier config")
def test_fleet_without_any_config_says_it_has_no_state(tmp_path: Path) -> None:
    if Path("/var/lib/gpu-attest-verifier/verifier.db").exists():
        pytest.skip("this host has verifier state")
    done = cli(None, "fleet")
    assert done.returncode == VerifierExit.CONFIG
    assert "no verifier state at" in one_line(done.stderr) and "built-in defaults" in done.stderr


def test_serve_says_which_config_it_loaded(tmp_path: Path) -> None:
    # Port in use: serve reads its config, logs it, then stops at the bind (item 14 too).
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp_path)
        config.write_text(
            config.read_text().replace('listen = "127.0.0.1:0"', f'listen = "127.0.0.1:{port}"', 1)
        )
        done = cli(config, "serve")
    assert done.returncode == VerifierExit.CONFIG, done.stderr
    assert f"configuration loaded from {config}" in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert "Traceback" not in done.stderr and f"127.0.0.1:{port}" in last and "in use" in last


# --- item 14: pipes, gates and empty listings --------------------------------------------------


def test_a_closed_stdout_ends_a_listing_quietly(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    assert cli(config, "token", "create", "--site", "a").returncode == VerifierExit.OK
    read_end, write_end = os.pipe()
    os.close(read_end)  # `| head` that has already exited
    try:
        done = cli(config, "registry", "show", stdout=write_end)
    finally:
        os.close(write_end)
    assert done.returncode == VerifierExit.OK and done.stderr == ""


def test_empty_listings_say_so(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    assert cli(config, "token", "create", "--site", "a").returncode == VerifierExit.OK
    said: Callable[..., str] = lambda *a: cli(config, *a).stdout  # noqa: E731
    assert said("agents") == "no agents enrolled\n"
    assert said("fleet") == "no hosts have reported\n"
    assert said("findings") == "no open findings\n"
    assert said("findings", "--all") == "no findings\n"
    for command in (["agents"], ["fleet"], ["findings"]):
        assert said(*command, "--json") == "[]\n"
    done = cli(config, "fleet", "--site", "UNKNOWN")
    assert done.returncode == VerifierExit.REFUSED and done.stdout == ""
    assert "unknown site 'UNKNOWN'" in one_line(done.stderr)
