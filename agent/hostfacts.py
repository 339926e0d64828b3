"""Host facts, read from a root directory ("/" in production, fixture trees in tests).

Every reading that cannot be made is an `Unavailable` naming why: "NotFound" (no such file),
"NoPermission" (e.g. DMI serial is root-only), "Empty" (the file holds nothing useful).
When the root is the live "/", memory, CPU count and uptime come from psutil, which reads the
same kernel interfaces but also handles the corner cases (containers, hot-plugged CPUs).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from attest.identifiers import HOSTNAME, MACHINE_ID, PLAIN_UUID
from attest.model import HostFacts, Reading, Unavailable

LIVE_ROOT = Path("/")
# DMI answers that mean "the vendor left this blank".
_DMI_PLACEHOLDERS = frozenset(
    {"", "to be filled by o.e.m.", "not specified", "default string", "system serial number"}
)


def read_small_file(path: str, limit: int = 4 * 1024 * 1024) -> str:
    """Read a (proc/sys) file with plain syscalls: pathlib's text layer costs more than the read."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        size = 0
        while size < limit:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks).decode("utf-8", errors="replace")


def read_text(root: Path, relative: str) -> Reading[str]:
    """Read a small text file under `root`; strip whitespace; never raises for I/O."""
    try:
        text = read_small_file(os.path.join(root, relative.lstrip("/")))  # noqa: PTH118 - hot path
    except FileNotFoundError:
        return Unavailable("NotFound")
    except PermissionError:
        return Unavailable("NoPermission")
    except IsADirectoryError:
        return Unavailable("NotAFile")
    except OSError:
        return Unavailable("IOError")
    text = text.strip()
    return text if text else Unavailable("Empty")


def _dmi(root: Path, name: str) -> Reading[str]:
    value = read_text(root, f"sys/class/dmi/id/{name}")
    if isinstance(value, str) and value.lower() in _DMI_PLACEHOLDERS:
        return Unavailable("Empty")
    return value


def parse_os_release(text: str) -> Reading[str]:
    """PRETTY_NAME (or NAME VERSION) of an os-release file."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key and not key.startswith("#"):
            fields[key] = value.strip().strip("\"'")
    if fields.get("PRETTY_NAME"):
        return fields["PRETTY_NAME"]
    name = " ".join(v for v in (fields.get("NAME"), fields.get("VERSION")) if v)
    return name if name else Unavailable("Empty")


def parse_cpuinfo(text: str) -> tuple[Reading[str], Reading[int]]:
    """CPU model and logical CPU count from /proc/cpuinfo (x86 "model name", arm "Model")."""
    model: Reading[str] = Unavailable("Empty")
    count = 0
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        key = key.strip()
        if not sep:
            continue
        if key == "processor":
            count += 1
        elif key in ("model name", "Model", "cpu model") and isinstance(model, Unavailable):
            model = value.strip() or Unavailable("Empty")
    return model, (count if count else Unavailable("Empty"))


def parse_meminfo_total(text: str) -> Reading[int]:
    """MemTotal of /proc/meminfo, in bytes."""
    for line in text.splitlines():
        if line.startswith("MemTotal:"):
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                return int(parts[1]) * 1024
    return Unavailable("Empty")


def parse_uptime(text: str) -> Reading[int]:
    """Whole seconds since boot from /proc/uptime."""
    try:
        return int(float(text.split(maxsplit=1)[0]))
    except (IndexError, ValueError, OverflowError):
        return Unavailable("Empty")


def _parsed_int(reading: Reading[str], parser: Callable[[str], Reading[int]]) -> Reading[int]:
    return reading if isinstance(reading, Unavailable) else parser(reading)


def _parsed_str(reading: Reading[str], parser: Callable[[str], Reading[str]]) -> Reading[str]:
    return reading if isinstance(reading, Unavailable) else parser(reading)


def _live_stats() -> tuple[Reading[int], Reading[int], Reading[int]]:
    count = psutil.cpu_count(logical=True)
    memory = psutil.virtual_memory().total
    uptime = int(time.time() - psutil.boot_time())
    return (count if count else Unavailable("Empty")), memory, max(uptime, 0)


def _well_formed(reading: Reading[str], grammar: re.Pattern[str]) -> Reading[str]:
    """An identifier outside the grammar the verifier holds it to (attest/identifiers.py) is
    reported as unavailable: the host keeps attesting instead of being refused for ever."""
    if isinstance(reading, str) and not grammar.match(reading):
        return Unavailable("Malformed")
    return reading


def collect_host_facts(root: Path = LIVE_ROOT) -> HostFacts:
    """Read this host's identity and size. Never raises for a missing or unreadable source."""
    cpuinfo = read_text(root, "proc/cpuinfo")
    if isinstance(cpuinfo, Unavailable):
        cpu_model: Reading[str] = cpuinfo
        cpu_count: Reading[int] = cpuinfo
    else:
        cpu_model, cpu_count = parse_cpuinfo(cpuinfo)
    if root == LIVE_ROOT:
        live_count, memory, uptime = _live_stats()
        cpu_count = live_count
    else:
        memory = _parsed_int(read_text(root, "proc/meminfo"), parse_meminfo_total)
        uptime = _parsed_int(read_text(root, "proc/uptime"), parse_uptime)
    os_release = read_text(root, "etc/os-release")
    if isinstance(os_release, Unavailable) and os_release.reason == "NotFound":
        os_release = read_text(root, "usr/lib/os-release")
    hostname = read_text(root, "proc/sys/kernel/hostname")
    if isinstance(hostname, Unavailable):
        hostname = read_text(root, "etc/hostname")
    return HostFacts(
        machine_id=_well_formed(read_text(root, "etc/machine-id"), MACHINE_ID),
        hostname=_well_formed(hostname, HOSTNAME),
        dmi_sys_vendor=_dmi(root, "sys_vendor"),
        dmi_product_name=_dmi(root, "product_name"),
        dmi_product_serial=_dmi(root, "product_serial"),
        boot_id=_well_formed(read_text(root, "proc/sys/kernel/random/boot_id"), PLAIN_UUID),
        kernel=read_text(root, "proc/sys/kernel/osrelease"),
        os_release=_parsed_str(os_release, parse_os_release),
        cpu_model=cpu_model,
        cpu_count=cpu_count,
        memory_bytes=memory,
        uptime_s=uptime,
    )
