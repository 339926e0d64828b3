"""verifier.toml parsing: one frozen value, unknown keys are errors, unsafe values refused."""

from __future__ import annotations

import platform
from pathlib import Path

import pytest

from attest.errors import ConfigError
from verifier.config import listen_address, load_config, parse_config
from verifier.ratelimit import RateLimiter
from verifier.server import bound_heap_arenas, check_transport

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "verifier.toml"


def test_example_file_parses() -> None:
    config = parse_config(EXAMPLE.read_text())
    assert config.listen == "0.0.0.0:7443"
    assert config.stream.challenge_ttl_s == 300
    assert config.database_url == "/var/lib/gpu-attest-verifier/verifier.db"


def test_defaults_and_postgres_dsn() -> None:
    config = parse_config('database = "postgresql://postgres@127.0.0.1:5432/test"\n')
    assert config.database_url.startswith("postgresql://")
    assert config.stream.offline_max_age_s == 30 * 24 * 3600
    assert config.store.commit_interval.total_seconds() == 0.1
    assert parse_config("[store]\ncommit_interval_ms = 0").store.commit_interval_ms == 0


@pytest.mark.parametrize(
    "text",
    [
        "lisen = '0.0.0.0:1'",
        "[stream]\nchallenge_tll_s = 10",
        "[nosuch]\nx = 1",
        "listen = 7443",
        "listen = 'nohost'",
        "[stream]\nchallenge_ttl_s = 0",
        "[stream]\nrate_per_s = -1",
        "[stream]\nmax_message_bytes = 1000000000",
        "[tls]\nnames = []",
        "[tls]\nclient_cert_days = 5000",
        "[store]\ncommit_interval_ms = -1",
        "[store]\ncommit_interval_ms = 5000",
        "[store]\ncommit_interval_ms = 2.5",
        "database = 'mysql://x'",
        "[stream]\nclock_skew_s = true",
        "not toml at all = = =",
        "tls = 3",
        "[stream]\nrate_per_s = nan",
        "[stream]\nrate_per_s = inf",
        "[tls]\nnames = ['']",
        "log_origin = 3",
    ],
)
def test_invalid_configurations_are_refused(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_config(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[stream]\nrate_per_s = nan", "[stream] rate_per_s: must be a finite number, got nan"),
        ("[stream]\nchallenge_tll_s = 10", "[stream] challenge_tll_s: unknown key; did you mean"),
        ("[nosuch]\nx = 1", "nosuch: unknown key"),
        ("tls = 3", "tls: must be a table, got 3"),
        (
            "[store]\ncommit_interval_ms = 5000",
            "[store] commit_interval_ms: must be an integer from 0",
        ),
        ("database = 'mysql://x'", "database: must be a SQLite file path or a postgresql:// DSN"),
    ],
)
def test_errors_name_file_table_and_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    assert str(caught.value).startswith("verifier.toml: ")
    assert message in str(caught.value)


def test_named_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_config(tmp_path / "absent.toml")


def test_loopback_detection() -> None:
    def is_loopback(address: str) -> bool:
        return listen_address(address).is_loopback

    assert is_loopback("127.0.0.1:7443")
    assert is_loopback("[::1]:7443")
    assert is_loopback("localhost:1")
    assert not is_loopback("0.0.0.0:7443")
    assert not is_loopback("10.1.2.3:7443")
    assert not is_loopback("verifier.example:7443")
    with pytest.raises(ConfigError, match="not HOST:PORT"):
        listen_address("nohost")


def test_insecure_plaintext_is_refused_off_loopback() -> None:
    with pytest.raises(ConfigError):
        check_transport(parse_config("listen = '0.0.0.0:7443'"), insecure_plaintext=True)
    check_transport(parse_config("listen = '127.0.0.1:7443'"), insecure_plaintext=True)
    check_transport(parse_config("listen = '0.0.0.0:7443'"), insecure_plaintext=False)


def test_rate_limiter_waits_briefly_then_refuses() -> None:
    limiter = RateLimiter(rate=1.0, burst=2)
    assert limiter.acquire("a", 0.0, 1.5) == 0.0
    assert limiter.acquire("a", 0.0, 1.5) == 0.0
    assert limiter.acquire("a", 0.0, 1.5) == pytest.approx(1.0)
    assert limiter.acquire("a", 0.0, 1.5) is None
    assert limiter.acquire("b", 0.0, 1.5) == 0.0  # another agent is not affected
    assert limiter.acquire("a", 10.0, 1.5) == 0.0


def test_heap_arenas_are_bounded_where_the_c_library_is_glibc() -> None:
    assert bound_heap_arenas() is (platform.libc_ver()[0] == "glibc")
