"""attest/report_entries.py reads the protobuf wire format by hand (a regulator has no protobuf):
it must read what the real protobuf library writes, field for field, and never crash on bytes."""

from __future__ import annotations

import contextlib
from collections import Counter
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from attest.errors import DecodeError
from attest.report_entries import fields, parse_envelope, parse_evidence_gpus
from attest.v1 import attest_pb2 as pb

_U32 = st.integers(0, 2**32 - 1)
_GPU = st.tuples(st.text(max_size=40), st.none() | st.tuples(_U32, _U32), st.integers(0, 8))


@given(
    st.text(max_size=30),
    st.lists(_GPU, max_size=12),
    st.binary(max_size=64),
    st.integers(1, 2**63),
)
def test_reads_what_protobuf_writes(agent_id: str, gpus: list[Any], nonce: bytes, seq: int) -> None:
    evidence = pb.Evidence(agent_id=agent_id, seq=seq, nonce=nonce)
    expected: Counter[tuple[int | None, int | None]] = Counter()
    for uuid, pci, index in gpus:
        gpu = evidence.gpus.add(uuid=uuid, index=index)
        if pci is not None:
            gpu.pci.CopyFrom(pb.PciInfo(device_id=pci[0], subsystem_id=pci[1], bus_id="0:1"))
            expected[pci] += 1
        else:
            expected[None, None] += 1
    payload = evidence.SerializeToString()
    read = parse_evidence_gpus(payload)
    assert (read.agent_id, read.gpus) == (agent_id, expected)

    envelope = pb.Envelope(payload=payload, payload_type="t/x")
    envelope.signatures.add(sig=b"\x01" * 64, keyid="ab" * 32)
    envelope.signatures.add(sig=b"", keyid="")
    parsed = parse_envelope(envelope.SerializeToString())
    assert (parsed.payload, parsed.payload_type) == (payload, "t/x")
    assert [(s.sig, s.keyid) for s in parsed.signatures] == [(b"\x01" * 64, "ab" * 32), (b"", "")]


@given(st.binary(max_size=300))
def test_any_bytes_parse_or_raise_decode_error(raw: bytes) -> None:
    for parse in (fields, parse_envelope, parse_evidence_gpus):
        with contextlib.suppress(DecodeError):
            parse(raw)
