"""Archive segments: envelope bytes moved out of the hot database by `log archive`
(docs/design.md §9).

A segment is a file under the archive directory (STATE_DIR/archive) named by the hex SHA-256
of its bytes, so its name is its content and writing it twice writes the same file. It is a
sequence of frames; a frame is one zlib stream of up to FRAME_BLOBS records
`envelope hash (32) || length (4, big-endian) || envelope bytes`, so a segment alone says what
it holds. The store's `blob_archive` table maps each archived hash to its segment and frame;
reading one envelope reads and inflates one frame, and the bytes found must hash to the hash
asked for (an altered segment is refused, never believed).
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from attest.errors import StoreError
from attest.files import write_file_atomically

#: Records per frame: a frame is what one read inflates, so it stays small (a few hundred KB of
#: envelopes); a host's consecutive envelopes share one, which is what zlib compresses well.
FRAME_BLOBS = 64
#: Envelopes per segment file (tens of MB at most).
SEGMENT_BLOBS = 8192
#: One frame never inflates to more than this (FRAME_BLOBS envelopes of the 4 MiB maximum).
MAX_FRAME_BYTES = FRAME_BLOBS * (4 * 1024 * 1024 + 36)
_HASH = 32
_HEADER = _HASH + 4


@dataclass(frozen=True, slots=True)
class Placement:
    """Where an archived envelope lies: its segment (SHA-256 of the file) and its frame."""

    envelope_hash: bytes
    segment: bytes
    frame_offset: int
    frame_length: int


def build_segment(blobs: Sequence[tuple[bytes, bytes]]) -> tuple[bytes, list[Placement]]:
    """The segment file holding `blobs` ((hash, envelope bytes), in the order given) and where
    each lies in it. Deterministic: the same blobs in the same order give the same bytes."""
    out = bytearray()
    frames: list[tuple[bytes, int, int]] = []
    for start in range(0, len(blobs), FRAME_BLOBS):
        chunk = blobs[start : start + FRAME_BLOBS]
        raw = b"".join(h + len(body).to_bytes(4, "big") + body for h, body in chunk)
        frame = zlib.compress(raw, 9)
        frames.extend((h, len(out), len(frame)) for h, _ in chunk)
        out += frame
    data = bytes(out)
    name = hashlib.sha256(data).digest()
    return data, [Placement(h, name, offset, length) for h, offset, length in frames]


def segment_path(directory: Path, segment: bytes) -> Path:
    return directory / f"{segment.hex()}.seg"


def write_segment(directory: Path, data: bytes) -> Path:
    """Write a segment durably (file fsync'd, then renamed into place, then the directory
    fsync'd) under its content name; return its path. Raises StoreError."""
    path = segment_path(directory, hashlib.sha256(data).digest())
    try:
        write_file_atomically(path, data, 0o600)
    except OSError as exc:
        raise StoreError(f"cannot write archive segment {path}: {exc}") from exc
    return path


def read_archived(directory: Path | None, placement: Placement) -> bytes:
    """The envelope bytes `placement` names, checked against their hash. Raises StoreError when
    the archive directory is not known here, the segment is missing or short, or the bytes
    found are not the envelope asked for."""
    if directory is None:
        raise StoreError("envelope is archived, and this store has no archive directory")
    path = segment_path(directory, placement.segment)
    try:
        with path.open("rb") as handle:
            handle.seek(placement.frame_offset)
            frame = handle.read(placement.frame_length)
    except OSError as exc:
        raise StoreError(f"archived envelope's segment {path} cannot be read: {exc}") from exc
    if len(frame) != placement.frame_length:
        raise StoreError(f"archive segment {path} is shorter than its index says")
    body = find_in_frame(frame, placement.envelope_hash)
    if body is None:
        raise StoreError(f"archive segment {path} does not hold the envelope its index names")
    return body


def find_in_frame(frame: bytes, envelope_hash: bytes) -> bytes | None:
    """The record of `envelope_hash` in a frame, if the frame holds it and its bytes hash to
    it; None otherwise. Raises StoreError when the frame is not a well-formed frame."""
    try:
        inflater = zlib.decompressobj()
        raw = inflater.decompress(frame, MAX_FRAME_BYTES)
    except zlib.error as exc:
        raise StoreError(f"archive frame does not inflate: {exc}") from exc
    if inflater.unconsumed_tail or not inflater.eof:
        raise StoreError("archive frame is truncated or larger than a frame can be")
    position = 0
    while position < len(raw):
        if position + _HEADER > len(raw):
            raise StoreError("archive frame ends inside a record header")
        digest = raw[position : position + _HASH]
        length = int.from_bytes(raw[position + _HASH : position + _HEADER], "big")
        body = raw[position + _HEADER : position + _HEADER + length]
        if len(body) != length:
            raise StoreError("archive frame ends inside a record")
        if digest == envelope_hash:
            return body if hashlib.sha256(body).digest() == envelope_hash else None
        position += _HEADER + length
    return None
