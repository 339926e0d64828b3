"""agent.toml: defaults, every key, and the errors (unknown keys, ranges, loopback rules)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.config import AgentConfig, load_config, parse_config
from attest.errors import ConfigError
from attest.hostport import HostPort, parse_host_port

EXAMPLE = Path(__file__).parents[2] / "examples" / "agent.toml"


def test_defaults() -> None:
    cfg = parse_config("")
    assert cfg == AgentConfig()
    assert cfg.state_dir == Path("/var/lib/gpu-attest") and cfg.interval_s == 60.0
    assert cfg.metrics_listen is None and cfg.log_format == "text"


def test_every_key(tmp_path: Path) -> None:
    cfg = parse_config(
        """
        verifier = "verifier.example.com:7443"
        state_dir = "state"
        interval_seconds = 30
        inventory_poll_seconds = 5.5
        backoff_initial_seconds = 0.5
        backoff_cap_seconds = 120
        metrics_listen = "[::1]:9465"
        log_format = "json"
        simulate = "/etc/gpu-attest/machine.toml"
        spool_max_bytes = 1048576
        """,
        tmp_path,
    )
    assert cfg.verifier == HostPort("verifier.example.com", 7443)
    assert cfg.state_dir == tmp_path / "state"
    assert cfg.simulate == Path("/etc/gpu-attest/machine.toml")
    assert (cfg.interval_s, cfg.inventory_poll_s) == (30.0, 5.5)
    assert (cfg.backoff_initial_s, cfg.backoff_cap_s) == (0.5, 120.0)
    assert cfg.metrics_listen == HostPort("::1", 9465) and str(cfg.metrics_listen) == "[::1]:9465"
    assert cfg.log_format == "json" and cfg.spool_max_bytes == 1048576


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('verifer = "a:1"', "^agent.toml: verifer: unknown key; did you mean 'verifier'"),
        ("[metrics]\nlisten = 1", "^agent.toml: metrics: unknown key"),
        (
            "interval_seconds = nan",
            "^agent.toml: interval_seconds: must be a finite number, got nan",
        ),
        ("backoff_cap_seconds = inf", "finite number, got inf"),
        ('verifier = "nohost"', "not HOST:PORT"),
        ('verifier = "a:99999"', "not HOST:PORT"),
        ("interval_seconds = 0", "between"),
        ("interval_seconds = true", "number"),
        ('interval_seconds = "60"', "number"),
        ("backoff_initial_seconds = 10\nbackoff_cap_seconds = 1", "must not exceed"),
        ('metrics_listen = "0.0.0.0:9464"', "loopback"),
        ('log_format = "xml"', "log_format"),
        ("spool_max_bytes = 10", "spool_max_bytes"),
        ('verifier = "10.0.0.5:7443"\ninsecure_plaintext = true', "loopback"),
        ('insecure_plaintext = "yes"', "true or false"),
        ('state_dir = ""', "non-empty"),
        ("= broken", "not valid TOML"),
    ],
)
def test_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(text)


def test_insecure_plaintext_allowed_to_loopback_only() -> None:
    cfg = parse_config('verifier = "127.0.0.1:7443"\ninsecure_plaintext = true')
    assert cfg.insecure_plaintext and cfg.verifier is not None and cfg.verifier.is_loopback
    with pytest.raises(ConfigError, match="loopback"):
        cfg.with_overrides(verifier=parse_host_port("gpu.example:1", "x"))


def test_load_config_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")
    path = tmp_path / "agent.toml"
    path.write_text('state_dir = "s"\n')
    assert load_config(path).state_dir == tmp_path / "s"


def test_example_file_is_valid() -> None:
    cfg = load_config(EXAMPLE)
    assert cfg.verifier is not None


_values = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=True),
    st.booleans(),
    st.text(max_size=30),
    st.lists(st.integers(), max_size=3),
)
_keys = st.sampled_from(
    ["verifier", "state_dir", "interval_seconds", "inventory_poll_seconds",
     "backoff_initial_seconds", "backoff_cap_seconds", "metrics_listen", "log_format",
     "simulate", "insecure_plaintext", "spool_max_bytes", "other"]
)  # fmt: skip


@given(st.text(max_size=300))
def test_arbitrary_text_is_a_config_or_a_config_error(text: str) -> None:
    with contextlib.suppress(ConfigError):
        parse_config(text)


@given(st.dictionaries(_keys, _values, max_size=6))
def test_arbitrary_values_are_a_config_or_a_config_error(data: dict[str, object]) -> None:
    import tomllib  # noqa: PLC0415

    text = "\n".join(f"{k} = {_toml(v)}" for k, v in data.items())
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return
    try:
        cfg = parse_config(text)
    except ConfigError:
        return
    assert cfg.interval_s >= 1 and cfg.backoff_initial_s <= cfg.backoff_cap_s
    assert cfg.metrics_listen is None or cfg.metrics_listen.is_loopback


def _toml(value: object) -> str:
    import json  # noqa: PLC0415

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if value != value else ("inf" if value > 1e308 else repr(value))
    return json.dumps(value)


def test_full_evidence_interval() -> None:
    assert AgentConfig().full_evidence_interval_s == 3600
    assert parse_config('full_evidence_interval = "15m"').full_evidence_interval_s == 900
    assert parse_config('full_evidence_interval = "0s"').full_evidence_interval_s == 0
    assert parse_config('full_evidence_interval = "24h"').full_evidence_interval_s == 86400
    for bad in ('"25h"', '"8d"', "60", '"soon"'):
        with pytest.raises(ConfigError, match="full_evidence_interval"):
            parse_config(f"full_evidence_interval = {bad}")
