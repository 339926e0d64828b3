"""The evidence entries a signed report samples, read without protobuf (docs/verify.md).

A regulator's machine needs only `cryptography` and this package, so the few fields a report
check needs are read straight from the protobuf wire format (docs/protocol.md §2, §4): the DSSE
envelope (payload 1, payload_type 2, signatures 3 {sig 1, keyid 2}) and, in the evidence
payload, agent_id (1) and each GPU's PCI ids (gpus 10 -> pci 9 -> device_id 2, subsystem_id 3).
Everything else is skipped. Malformed bytes raise DecodeError; nothing is ever re-serialized.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from attest.envelope import Envelope, EnvelopeSignature
from attest.errors import DecodeError

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
#: A GPU with no readable PCI ids (the agent named `pci` unavailable): None, as the store keeps it.
PciIdentity = tuple[int | None, int | None]


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(data):
            raise DecodeError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift >= 64:
            raise DecodeError("varint longer than 10 bytes")


def fields(data: bytes) -> list[tuple[int, int, int | bytes]]:
    """The (field number, wire type, value) of one message, in order: varints as int, length-
    delimited fields as bytes; fixed-width fields are skipped over as bytes. Raises DecodeError
    for truncated input, field number 0 or a group wire type."""
    out: list[tuple[int, int, int | bytes]] = []
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise DecodeError("protobuf field number 0")
        value: int | bytes
        if wire == _VARINT:
            value, pos = _varint(data, pos)
        elif wire in (_I64, _I32):
            width = 8 if wire == _I64 else 4
            if pos + width > len(data):
                raise DecodeError("truncated fixed-width field")
            value, pos = data[pos : pos + width], pos + width
        elif wire == _LEN:
            length, pos = _varint(data, pos)
            if pos + length > len(data):
                raise DecodeError("length-delimited field runs past the end")
            value, pos = data[pos : pos + length], pos + length
        else:
            raise DecodeError(f"protobuf wire type {wire} is not used here")
        out.append((number, wire, value))
    return out


def _text(value: int | bytes, what: str) -> str:
    if not isinstance(value, bytes):
        raise DecodeError(f"{what} is not length-delimited")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError(f"{what} is not UTF-8") from exc


def _blob(value: int | bytes, what: str) -> bytes:
    if not isinstance(value, bytes):
        raise DecodeError(f"{what} is not length-delimited")
    return value


def _number(value: int | bytes, what: str) -> int:
    if isinstance(value, bytes):
        raise DecodeError(f"{what} is not a varint")
    return value


def parse_envelope(raw: bytes) -> Envelope:
    """The DSSE envelope in `raw` (protobuf form). Raises DecodeError."""
    payload, payload_type = b"", ""
    signatures: list[EnvelopeSignature] = []
    for number, _wire, value in fields(raw):
        if number == 1:
            payload = _blob(value, "envelope payload")
        elif number == 2:
            payload_type = _text(value, "envelope payload_type")
        elif number == 3:
            sig, keyid = b"", ""
            for inner, _w, item in fields(_blob(value, "envelope signature")):
                if inner == 1:
                    sig = _blob(item, "signature sig")
                elif inner == 2:
                    keyid = _text(item, "signature keyid")
            signatures.append(EnvelopeSignature(keyid=keyid, sig=sig))
    return Envelope(payload_type=payload_type, payload=payload, signatures=tuple(signatures))


@dataclass(frozen=True)
class EvidenceGpus:
    """What a report check reads from one evidence payload: who sent it and its GPUs, counted
    per PCI identity (device id, subsystem id)."""

    agent_id: str
    gpus: Counter[PciIdentity]


def _gpu_identity(raw: bytes) -> PciIdentity:
    pci: bytes | None = None
    for number, _wire, value in fields(raw):
        if number == 9:
            pci = _blob(value, "gpu pci")
    if pci is None:
        return None, None
    device, subsystem = 0, 0
    for number, _wire, value in fields(pci):
        if number == 2:
            device = _number(value, "pci device_id")
        elif number == 3:
            subsystem = _number(value, "pci subsystem_id")
    return device, subsystem


def parse_evidence_gpus(payload: bytes) -> EvidenceGpus:
    """The agent id and GPU PCI identities of an evidence payload. Raises DecodeError."""
    agent_id = ""
    gpus: Counter[PciIdentity] = Counter()
    for number, _wire, value in fields(payload):
        if number == 1:
            agent_id = _text(value, "evidence agent_id")
        elif number == 10:
            gpus[_gpu_identity(_blob(value, "evidence gpu"))] += 1
    return EvidenceGpus(agent_id=agent_id, gpus=gpus)
