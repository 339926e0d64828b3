"""`HOST:PORT` addresses and the one loopback check.

Plaintext gRPC and the metrics endpoints are allowed only on loopback addresses; every such
rule asks `HostPort.is_loopback`, and refuses through `require_loopback`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from attest.errors import ConfigError

_NOT_IN_HOST = frozenset("/?#@[]")


@dataclass(frozen=True)
class HostPort:
    """A `host:port` address; IPv6 literals are written `[::1]:port`."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: str, *, any_port: bool = False) -> HostPort:
        """Parse `host:port` or `[v6]:port`. The port is 1-65535, or also 0 with `any_port`
        (a listener that takes a free port). Raises ValueError saying what is wrong."""
        if text.startswith("["):
            host, sep, rest = text[1:].partition("]:")
        else:
            host, sep, rest = text.rpartition(":")
        lowest = 0 if any_port else 1
        digits = rest.isascii() and rest.isdigit() and len(rest) <= 5
        if not sep or not host or not digits or not lowest <= int(rest) <= 65535:
            raise ValueError(f"{text!r} is not HOST:PORT")
        if any(c.isspace() or c in _NOT_IN_HOST for c in host):
            raise ValueError(f"{host!r} is not a host name or address")
        return cls(host, int(rest))

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def is_loopback(self) -> bool:
        """The name localhost, or a loopback IP address (127.0.0.0/8, ::1)."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


def parse_host_port(text: str, what: str, *, any_port: bool = False) -> HostPort:
    """`HostPort.parse` for an operator's value named `what`; raise ConfigError."""
    try:
        return HostPort.parse(text, any_port=any_port)
    except ValueError as exc:
        raise ConfigError(f"{what}: {exc}") from None


def require_loopback(address: HostPort, what: str) -> None:
    """Raise ConfigError unless `address` is loopback: `what` is allowed nowhere else."""
    if not address.is_loopback:
        raise ConfigError(f"{what} is allowed only on a loopback address, not {address}")
