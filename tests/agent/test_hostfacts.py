"""Host facts over fixture trees: every reading present, absent (NotFound), or denied."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from agent.hostfacts import (
    collect_host_facts,
    parse_cpuinfo,
    parse_meminfo_total,
    parse_os_release,
    parse_uptime,
)
from attest.model import HostFacts, Unavailable

FIXTURES = Path(__file__).parent / "fixtures" / "hosts"


def test_complete_tree_reads_every_fact() -> None:
    facts = collect_host_facts(FIXTURES / "hardened")
    assert facts == HostFacts(
        machine_id="4c4c4544004b4d1080384ac04f4d3432",
        hostname="gpu-node-017",
        dmi_sys_vendor="Dell Inc.",
        dmi_product_name="PowerEdge XE9680",
        dmi_product_serial="7XK4Q73",
        boot_id="9f0c3c39-8f5e-4a1b-9f3a-0d1e2c3b4a59",
        kernel="6.8.0-49-generic",
        os_release="Ubuntu 24.04.1 LTS",
        cpu_model="Intel(R) Xeon(R) Platinum 8480+",
        cpu_count=2,
        memory_bytes=2113612360 * 1024,
        uptime_s=123456,
    )


def test_fallbacks_placeholders_and_garbage() -> None:
    facts = collect_host_facts(FIXTURES / "lax")
    assert facts.hostname == "lax-node"  # /etc/hostname when procfs lacks it
    assert facts.os_release == "Rocky Linux 9.4 (Blue Onyx)"  # /usr/lib/os-release, no PRETTY_NAME
    assert facts.dmi_product_serial == Unavailable("Empty")  # "To Be Filled By O.E.M."
    assert facts.cpu_model == "Neoverse-V2"
    assert facts.memory_bytes == Unavailable("Empty")
    assert facts.uptime_s == Unavailable("Empty")


def test_empty_tree_reports_not_found_everywhere(tmp_path: Path) -> None:
    facts = collect_host_facts(tmp_path)
    for name in HostFacts.__dataclass_fields__:
        assert getattr(facts, name) == Unavailable("NotFound"), name


def test_live_root_uses_psutil() -> None:
    facts = collect_host_facts()
    assert isinstance(facts.memory_bytes, int) and facts.memory_bytes > 0
    assert isinstance(facts.cpu_count, int) and facts.cpu_count >= 1
    assert isinstance(facts.uptime_s, int)


def test_root_only_file_is_no_permission(tmp_path: Path) -> None:
    """The DMI serial is 0400 root on real hosts; an unprivileged agent reads NoPermission."""
    dmi = tmp_path / "sys/class/dmi/id"
    dmi.mkdir(parents=True)
    (dmi / "product_serial").write_text("SECRET\n")
    (dmi / "product_serial").chmod(0o400)
    tmp_path.chmod(0o755)
    # Import first, then drop to nobody: only the read of the fixture runs unprivileged.
    code = (
        "import os, pathlib; from agent.hostfacts import collect_host_facts;"
        "os.setgid(65534); os.setuid(65534);"
        f"print(collect_host_facts(pathlib.Path({str(tmp_path)!r})).dmi_product_serial)"
    )
    if os.geteuid() != 0:
        (dmi / "product_serial").chmod(0o000)
        code = code.replace("os.setgid(65534); os.setuid(65534);", "")
    for parent in (tmp_path, *tmp_path.parents):
        if parent == Path("/"):
            break
        parent.chmod(parent.stat().st_mode | 0o005)
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parents[2],
    )
    assert done.stdout.strip() == "Unavailable(reason='NoPermission')"


@given(st.text())
def test_parsers_never_raise(text: str) -> None:
    parse_os_release(text)
    _model, count = parse_cpuinfo(text)
    assert isinstance(count, Unavailable) or count >= 1
    memory = parse_meminfo_total(text)
    assert isinstance(memory, Unavailable) or memory >= 0
    parse_uptime(text)
