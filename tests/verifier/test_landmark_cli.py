"""`gpu-attest-verifier landmark key|enroll|serve` through the real CLI, and landmark.toml's
checks: an enrolled landmark's stanza is what `registry import` takes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from attest.errors import ConfigError
from attest.keys import PublicKey, load_private_key
from verifier.cli import main
from verifier.config import load_config
from verifier.exits import VerifierExit
from verifier.landmark_config import parse_landmark_config
from verifier.server import open_configured_store


def landmark_toml(tmp_path: Path, extra: str = "") -> Path:
    """A landmark.toml for tmp_path; `extra` lines replace the base lines of the same key."""
    base = [
        'id = "lm-fra"', "lat = 50.11", "lon = 8.68", f'state_dir = "{tmp_path / "lm"}"',
        'listen = "127.0.0.1:0"', 'metrics_listen = ""',
    ]  # fmt: skip
    replaced = {line.split(" =")[0] for line in extra.splitlines()}
    path = tmp_path / "landmark.toml"
    kept = [line for line in base if line.split(" =")[0] not in replaced]
    path.write_text("\n".join(kept) + "\n" + extra)
    return path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    said = capsys.readouterr()
    return code, said.out, said.err


def test_key_prints_the_pem_of_the_key_it_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = landmark_toml(tmp_path)
    code, out, err = run(capsys, "landmark", "key", "--config", str(config))
    assert (code, err) == (VerifierExit.OK, "")
    key = load_private_key(tmp_path / "lm" / "landmark.key").public_key
    assert PublicKey.from_pem(out.encode()) == key
    # The same key on every run.
    assert run(capsys, "landmark", "key", "--config", str(config))[1] == out


def test_enroll_prints_a_stanza_registry_import_accepts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], config_file: Path
) -> None:
    code, stanza, _ = run(capsys, "landmark", "enroll", "--config", str(landmark_toml(tmp_path)))
    assert code == VerifierExit.OK and stanza.startswith("[[landmark]]\n")
    registry = tmp_path / "registry.toml"
    registry.write_text(stanza)
    code, out, err = run(
        capsys, "--config", str(config_file), "registry", "import", str(registry), "--json"
    )
    assert code == VerifierExit.OK, err
    json.loads(out)
    store = open_configured_store(load_config(config_file))
    try:
        (imported,) = store.load_registry().landmarks
    finally:
        store.close()
    key = load_private_key(tmp_path / "lm" / "landmark.key").public_key
    assert (imported.id, imported.lat, imported.lon) == ("lm-fra", 50.11, 8.68)
    assert imported.public_key == key.spki_der


@pytest.mark.parametrize(
    ("extra", "complaint"),
    [
        ("probes = 65\n", "landmark.toml: probes: must be an integer from 1 to 64, got 65"),
        ("colour = 1\n", "colour"),
        ('metrics_listen = "0.0.0.0:9466"\n', "metrics_listen: must be a loopback address"),
        ("answer_timeout_ms = 5000\n", "answer_timeout_ms: must be an integer from 1 to 1000"),
    ],
)
def test_a_bad_config_is_one_line_and_exit_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: str, complaint: str
) -> None:
    config = landmark_toml(tmp_path, extra)
    for action in ("key", "enroll", "serve"):
        code, out, err = run(capsys, "landmark", action, "--config", str(config))
        assert code == VerifierExit.CONFIG and out == ""
        assert err.count("\n") == 1 and complaint in err, err
        assert "Traceback" not in err


def test_a_missing_config_is_exit_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "landmark", "key", "--config", str(tmp_path / "none.toml"))
    assert code == VerifierExit.CONFIG and "does not exist" in err


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("lat = 1\nlon = 2\n", "landmark.toml: id: missing"),
        ('id = "a b"\nlat = 1\nlon = 2\n', "landmark.toml: id: must be an id"),
        ('id = "a"\nlat = 91\nlon = 2\n', "landmark.toml: lat: must be between -90 and 90"),
        ('id = "a"\nlat = 1\nlon = -181\n', "landmark.toml: lon: must be between -180 and 180"),
        ('id = "a"\nlat = nan\nlon = 1\n', "lat: must be a finite number"),
        ('id = "a"\nlat = 1\nlon = 1\nlisten = "nowhere"\n', "listen:"),
        ('id = "a"\nlat = 1\nlon = 1\nmax_sessions = 0\n', "max_sessions:"),
        # The verifier's config handed to a landmark command: said so, not "id: missing".
        ('listen = "0.0.0.0:7443"\nenroll_listen = "0.0.0.0:7444"\n', "this is a verifier.toml"),
    ],
)
def test_config_errors_name_the_key(text: str, complaint: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_landmark_config(text)
    assert complaint in str(caught.value)


def test_config_defaults() -> None:
    config = parse_landmark_config('id = "lm"\nlat = -33.9\nlon = 151.2\n')
    assert (config.listen, config.probes, config.max_sessions) == ("0.0.0.0:7445", 16, 64)
    assert config.metrics_listen == "127.0.0.1:9466"
    assert str(config.key_path) == "/var/lib/gpu-attest-landmark/landmark.key"


def test_help_lists_the_exit_codes() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "verifier.cli", "landmark", "--help"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0
    for code in VerifierExit:
        assert f"    {int(code)} " in done.stdout


def test_serve_runs_until_sigterm(tmp_path: Path) -> None:
    config = landmark_toml(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "verifier.cli", "landmark", "serve", "--config", str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "lm" / "landmark.key").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == VerifierExit.OK, err
    assert "landmark lm-fra serving" in err


def test_the_example_config_is_the_defaults_once_id_and_place_are_set() -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "landmark.toml"
    text = example.read_text()
    with pytest.raises(ConfigError, match="id: missing"):
        parse_landmark_config(text)  # shipped as is, the service refuses to start
    for key in ("id", "lat", "lon"):
        text = text.replace(f"# {key} =", f"{key} =")
    config = parse_landmark_config(text)
    defaults = parse_landmark_config(
        f'id = "{config.id}"\nlat = {config.lat}\nlon = {config.lon}\n'
    )
    assert config == defaults
