"""What every wire converter shares: size limits, strict parsing, timestamps, readings.

A reading is either a value or unset and named, with a reason, in its message's `unavailable`
map; the helpers here write and check that pairing for the converters in the sibling modules.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, MutableMapping
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any, TypeVar

from google.protobuf.message import DecodeError as ProtobufDecodeError
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from attest import model
from attest.errors import DecodeError, EvidenceBoundsError, InvariantError
from attest.wire._policy import MAX_STRING, Check

M = TypeVar("M", bound=Message)

#: Default bound on one serialized envelope; the verifier's configured limit may be lower.
MAX_ENVELOPE_BYTES = 4 * 1024 * 1024
HASH_LEN = 32
NONCE_LEN = 32
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_REASON = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")


def _parse(message: M, raw: bytes, what: str, *, reject_unknown: bool = True) -> M:
    try:
        message.ParseFromString(raw)
    except (ProtobufDecodeError, ValueError, RuntimeError) as exc:
        raise DecodeError(f"{what} is not a valid protobuf message: {exc}") from exc
    if reject_unknown and _has_unknown_fields(message):
        raise DecodeError(f"{what} carries fields this version does not know")
    return message


def _has_unknown_fields(message: Message) -> bool:
    """Whether `message`, or any message inside it, carries fields this version does not know.

    Drops them while looking (the caller refuses such a message): DiscardUnknownFields removes
    unknown fields and nothing else, at every depth, and each one takes at least a byte, so the
    serialized size changes exactly when there were some. Two C-level passes instead of a
    Python walk over every sub-message.
    """
    size = message.ByteSize()
    message.DiscardUnknownFields()
    return message.ByteSize() != size


# --- timestamps --------------------------------------------------------------------------------


def _ts(when: datetime) -> Timestamp:
    if when.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    # What Timestamp.FromDatetime computes, without its Python-level calendar round trip
    # (receipts and challenges are encoded per envelope). Every datetime is in range.
    seconds, micros = divmod((when - _EPOCH) // _MICROSECOND, 1_000_000)
    return Timestamp(seconds=seconds, nanos=micros * 1000)


def _from_ts(stamp: Timestamp, what: str) -> datetime:
    try:
        return stamp.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError) as exc:
        raise DecodeError(f"{what} is not a valid timestamp") from exc


# --- readings: set value, or unset and named in `unavailable` ----------------------------------


class _ReadingWriter:
    """Collects readings into a message and its `unavailable` map."""

    def __init__(self, unavailable: MutableMapping[str, str]) -> None:
        self.unavailable = unavailable

    def scalar(self, msg: Any, name: str, reading: object) -> None:
        if isinstance(reading, model.Unavailable):
            self.unavailable[name] = reading.reason
        else:
            setattr(msg, name, reading)

    def sub(self, msg: Any, name: str, reading: object, build: Callable[[Any], Message]) -> None:
        if isinstance(reading, model.Unavailable):
            self.unavailable[name] = reading.reason
        else:
            getattr(msg, name).CopyFrom(build(reading))


#: One shared Unavailable per reason already seen (frozen, so sharing is safe); a reason found
#: here has passed _REASON. Bounded: reasons come from the sender.
_UNAVAILABLE: dict[str, model.Unavailable] = {}
_UNAVAILABLE_CACHED = 256
_NOTHING_ABSENT: Mapping[str, model.Unavailable] = MappingProxyType({})


def _absent(msg: Any, what: str, readings: frozenset[str]) -> Mapping[str, model.Unavailable]:
    """The readings `msg.unavailable` names: each must be a reading field with a sane reason."""
    unavailable = msg.unavailable
    if not unavailable:
        return _NOTHING_ABSENT
    out: dict[str, model.Unavailable] = {}
    for name in unavailable:  # keys, then [name]: the map's items() is a Python-level view
        reason = unavailable[name]
        if name not in readings:
            unknown = sorted(set(unavailable) - readings)
            raise InvariantError(f"{what}: unavailable names unknown fields {unknown}")
        reading = _UNAVAILABLE.get(reason)
        if reading is None:
            if not _REASON.match(reason):
                raise InvariantError(f"{what}: unavailable reason {reason[:40]!r} is malformed")
            reading = model.Unavailable(reason)
            if len(_UNAVAILABLE) < _UNAVAILABLE_CACHED:
                _UNAVAILABLE[reason] = reading
        out[name] = reading
    return out


def _plain_readings(
    msg: Any, what: str, absent: Mapping[str, model.Unavailable], names: tuple[str, ...]
) -> dict[str, Any]:
    """Plain proto3 scalars: unavailable only when named, and then they must hold the default."""
    out: dict[str, Any] = {}
    for name in names:
        value = getattr(msg, name)
        reading = absent.get(name)
        if reading is not None:
            if value:
                raise InvariantError(f"{what}: {name} is both set and unavailable")
            out[name] = reading
        else:
            if isinstance(value, str) and len(value) > MAX_STRING:
                raise EvidenceBoundsError(f"{what}.{name} is longer than {MAX_STRING} characters")
            out[name] = value
    return out


def _check_strings(values: Mapping[str, object], where: str, checks: Mapping[str, Check]) -> None:
    """Apply each field's policy check (attest/wire/_policy.py) to the strings it reports."""
    for name, check in checks.items():
        value = values[name]
        if isinstance(value, str):
            check(value, f"{where}.{name}")


def _fields(cls: type) -> frozenset[str]:
    """The fields of a model class that hold a `Reading`, the only ones that may be absent."""
    return frozenset(
        f.name
        for f in dataclasses.fields(cls)
        if str(f.type).startswith("Reading[") or "Unavailable" in str(f.type)
    )
