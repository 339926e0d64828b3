"""The namespace lab itself (tests/netns.py): a path's delay is what it says, a bare veth link is
fast, relays in a row add up, and teardown leaves nothing behind, also after a failure and after
a run that died."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys

import pytest

from tests import netns
from tests.netns import Endpoint, Lab, Namespace

PORT = 7000


def _echo(lab: Lab, ns: Namespace, host: str = "0.0.0.0") -> None:
    lab.start(ns, [sys.executable, "-m", "tests.netns_echo", "serve", f"{host}:{PORT}"], "echo")


def _ping(ns: Namespace, target: Endpoint, count: int = 20) -> list[int]:
    out = ns.run(sys.executable, "-m", "tests.netns_echo", "ping", str(target), "-n", str(count))
    rtts: list[int] = json.loads(out)["rtt_ns"]
    assert len(rtts) == count
    return rtts


def test_a_bare_link_is_well_under_a_millisecond(netns_lab: Lab) -> None:
    client, server = netns_lab.namespace("client"), netns_lab.namespace("server")
    link = netns_lab.link(client, server)
    _echo(netns_lab, server)
    rtts = _ping(client, Endpoint(link.b_addr, PORT))
    assert statistics.median(rtts) < 1_000_000, rtts


@pytest.mark.parametrize("one_way_ms", [0.5, 15.0])
def test_a_path_adds_twice_its_delay_to_a_round_trip(netns_lab: Lab, one_way_ms: float) -> None:
    client, server = netns_lab.namespace("client"), netns_lab.namespace("server")
    _echo(netns_lab, server)
    target = netns_lab.path(client, server, PORT, one_way_ms / 1000)
    rtts = _ping(client, target)
    floor = int(2 * one_way_ms * 1e6)
    assert min(rtts) >= floor, rtts
    # Close to it: the relay's wake-ups (~0.2 ms each way) and two more hops, with room for a
    # loaded machine.
    assert min(rtts) < floor + 2_000_000, rtts


def test_the_relay_alone_delays_each_direction(netns_lab: Lab) -> None:
    """The relay process, also where the kernel has netem: 10 ms each way, on a bare link."""
    client, server = netns_lab.namespace("client"), netns_lab.namespace("server")
    link = netns_lab.link(client, server)
    _echo(netns_lab, server, "127.0.0.1")
    relayed = netns_lab.relay(
        server, Endpoint(link.b_addr, PORT), Endpoint("127.0.0.1", PORT), 0.01
    )
    rtts = _ping(client, relayed)
    assert 20_000_000 <= min(rtts) < 22_000_000, rtts


def test_relays_in_a_row_add_their_delays(netns_lab: Lab) -> None:
    """A host that passes the traffic on to a farther one only ever looks farther."""
    client, middle, server = (netns_lab.namespace(r) for r in ("client", "middle", "server"))
    _echo(netns_lab, server)
    near = netns_lab.path(middle, server, PORT, 0.0005)
    netns_lab.relay(middle, Endpoint("0.0.0.0", PORT + 1), near, 0)
    far = netns_lab.path(client, middle, PORT + 1, 0.015)
    direct = min(_ping(middle, near))
    chained = min(_ping(client, far))
    assert chained >= direct + 30_000_000, (direct, chained)


def test_a_routed_path_reaches_the_server_through_the_router() -> None:
    """The netem layout (client -> router -> server by routes, no relay), here without the
    qdisc so that it runs on kernels without netem too."""
    netns.require_namespaces()
    with Lab(delay_mode="netem") as lab:
        client, server = lab.namespace("client"), lab.namespace("server")
        _echo(lab, server)
        target = lab.path(client, server, PORT, 0)
        # No relay: the client talks to the server's own address on the router's far link.
        assert len(lab.processes) == 1
        assert target == Endpoint(f"{netns.SUBNET}.2.2", PORT)
        assert statistics.median(_ping(client, target)) < 1_000_000


def test_teardown_leaves_no_namespace_even_when_the_test_fails() -> None:
    netns.require_namespaces()
    made: list[str] = []
    with pytest.raises(RuntimeError, match="the test failed"), Lab() as lab:
        client, server = lab.namespace("client"), lab.namespace("server")
        _echo(lab, server)
        lab.path(client, server, PORT, 0.001)
        made = [ns.name for ns in lab.namespaces]
        pids = [p.popen.pid for p in lab.processes]
        raise RuntimeError("the test failed")
    assert len(made) == 3
    assert not set(made) & set(netns.list_namespaces())
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_sweep_removes_the_namespaces_of_a_dead_run() -> None:
    netns.require_namespaces()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    leftover = f"{netns.PREFIX}{int(dead.stdout)}-1-client"
    mine = f"{netns.PREFIX}{os.getpid()}-sweep"
    subprocess.run(["ip", "netns", "add", leftover], check=True)
    subprocess.run(["ip", "netns", "add", mine], check=True)
    try:
        assert leftover in netns.sweep_leftovers()
        names = netns.list_namespaces()
        assert leftover not in names
        assert mine in names  # a live run's namespaces are left alone
    finally:
        for name in (leftover, mine):
            if name in netns.list_namespaces():
                netns.delete_namespace(name)
