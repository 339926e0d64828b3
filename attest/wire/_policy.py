"""The decoding policy: what hardware and a host can really report, and nothing more.

An enrolled agent signs whatever it likes, so the decoder bounds every field by what real
hardware reports (a hostile agent filled a verifier's disk with 1,024 GPUs of 3,300-character
names per envelope) and holds identifiers to NVML's and the kernel's exact grammars (newlines,
ESC sequences, NUL and bidi overrides in names forged lines of `fleet` output). Free text is
bounded and refused when it holds control or format characters (attest/text.py).

A violation raises `EvidenceBoundsError`, an `InvariantError`: the verifier refuses the envelope
with that code and audits it (docs/design.md §4.2).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final

from attest.errors import EvidenceBoundsError
from attest.identifiers import (
    HOSTNAME,
    MACHINE_ID,
    PLAIN_UUID,
    SERIAL,
)
from attest.text import check_text

#: GPUs in one evidence. The largest hosts today carry 8 (an HGX board); a GB200 NVL72 or GB300
#: compute tray exposes 4 per host. 64 leaves 8x room for denser future boards while keeping
#: one envelope's GPU section in the hundreds of kilobytes.
MAX_GPUS: Final = 64
#: MIG devices of one GPU: at most 7 compute instances on A100, H100, H200 and B200 (one per 1g
#: slice); 16 leaves room for a part with more slices.
MAX_MIG_DEVICES: Final = 16
#: Posture checks: 11 names exist (docs/protocol.md §4); room for new ones.
MAX_POSTURE_CHECKS: Final = 64
MAX_LANDMARKS: Final = 64
#: The longest string any field may hold (free text such as a posture check's detail).
MAX_STRING: Final = 1024
#: Names, part numbers, versions, DMI strings: NVML's own buffers are at most 96 bytes
#: (NVML_DEVICE_NAME_V2_BUFFER_SIZE), DMI strings are short; 256 is generous.
MAX_NAME: Final = 256
#: Opaque confidential-computing blobs: an H100 attestation report is ~5 KB and its certificate
#: chain ~5 certificates of ~1 KB; 64 KiB each leaves ample room.
MAX_CC_BLOB: Final = 64 * 1024


def identifier(value: str, what: str, grammar: re.Pattern[str]) -> None:
    """Refuse `value` unless it matches `grammar` exactly."""
    if not grammar.match(value):
        raise EvidenceBoundsError(f"{what} {value[:64]!r} is not a well-formed identifier")


def text(value: str, what: str, max_len: int = MAX_NAME) -> None:
    """Refuse free text that is too long or holds control or format characters."""
    problem = check_text(value, what, max_len)
    if problem is not None:
        raise EvidenceBoundsError(problem)


def count(items: int, what: str, most: int) -> None:
    if items > most:
        raise EvidenceBoundsError(f"{what}: {items} is more than the {most} hardware can have")


Check = Callable[[str, str], None]


def by_grammar(grammar: re.Pattern[str]) -> Check:
    return lambda value, what: identifier(value, what, grammar)


def by_length(max_len: int) -> Check:
    return lambda value, what: text(value, what, max_len)


#: The check of each string reading, by message and field (readings that are not strings, and
#: unavailable ones, are not looked at).
HOST_STRINGS: Final[dict[str, Check]] = {
    "machine_id": by_grammar(MACHINE_ID),
    "hostname": by_grammar(HOSTNAME),
    "boot_id": by_grammar(PLAIN_UUID),
    "dmi_sys_vendor": by_length(MAX_NAME),
    "dmi_product_name": by_length(MAX_NAME),
    "dmi_product_serial": by_length(MAX_NAME),
    "kernel": by_length(MAX_NAME),
    "os_release": by_length(MAX_NAME),
    "cpu_model": by_length(MAX_NAME),
}
DRIVER_STRINGS: Final[dict[str, Check]] = {
    "driver_version": by_length(64),
    "nvml_version": by_length(64),
}
GPU_STRINGS: Final[dict[str, Check]] = {
    "serial": by_grammar(SERIAL),
    "name": by_length(MAX_NAME),
    "board_part_number": by_length(MAX_NAME),
    "vbios_version": by_length(MAX_NAME),
    "inforom_image_version": by_length(MAX_NAME),
    "architecture": by_length(64),
}
