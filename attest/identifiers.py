"""The exact grammars of the identifiers evidence carries (docs/protocol.md §4).

The verifier's decoding policy (attest/wire/_policy.py) refuses evidence whose identifiers do
not match; the agent checks what it reads against the same grammars, so that a host whose
hostname or machine id is odd reports the reading as unavailable instead of evidence the
verifier would refuse for ever. Standard library only.
"""

from __future__ import annotations

import re
from typing import Final

_HEX_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
#: NVML's UUIDs: lower-case hex in 8-4-4-4-12 form. Lower case only, so the same GPU cannot be
#: reported under two spellings (duplicate-gpu compares strings).
GPU_UUID: Final = re.compile(rf"GPU-{_HEX_UUID}\Z")
#: What the agent records for a GPU that is lost or inaccessible, whose UUID the driver could not
#: give (agent/readings.py placeholder_uuid): accepted only with that state.
PLACEHOLDER_UUID: Final = re.compile(r"unknown-gpu-index-[0-9]{1,4}\Z")
#: MIG devices: `MIG-<uuid>` (driver R470 and later) or the older `MIG-GPU-<uuid>/<gi>/<ci>`.
MIG_UUID: Final = re.compile(rf"MIG-(?:{_HEX_UUID}|GPU-{_HEX_UUID}/[0-9]{{1,3}}/[0-9]{{1,3}})\Z")
PLAIN_UUID: Final = re.compile(rf"{_HEX_UUID}\Z")
#: A board serial: NVIDIA prints 13 digits; letters, dots and dashes leave room for other boards.
SERIAL: Final = re.compile(r"[0-9A-Za-z][0-9A-Za-z.-]{0,63}\Z")
#: A PCI bus id as NVML gives it: 8 (or legacy 4) hex digits of domain, bus, device, function.
BUS_ID: Final = re.compile(r"(?:[0-9A-Fa-f]{4}){1,2}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-7]\Z")
#: A hostname: RFC 1123 labels (letters, digits, inner dashes) joined by dots, 253 at most.
HOSTNAME: Final = re.compile(
    r"(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\Z"
)
#: /etc/machine-id: 32 lower-case hex digits (machine-id(5)).
MACHINE_ID: Final = re.compile(r"[0-9a-f]{32}\Z")
#: Short technical tokens (agent and site ids, architecture, landmark ids).
TOKEN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}\Z")
