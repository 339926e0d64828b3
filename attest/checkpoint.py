"""C2SP signed notes and tlog checkpoints (c2sp.org/signed-note, c2sp.org/tlog-checkpoint).

A checkpoint is the note text `<origin>\\n<tree size>\\n<base64 root>\\n`, signed with Ed25519
(signature type 0x01). The signed form is that text, a blank line, and one line per signature:
`— <key name> <base64(4-byte key id || signature)>`. Verification ignores signatures by keys it
does not know, as the spec requires, and fails closed: a known key's signature that does not
verify, or no signature by the known key, is an error.

Parsers take untrusted bytes and raise `DecodeError` on malformed input; verifiers raise
`ProofError` when the input is well formed but not signed or not consistent. Base64 must be
canonical, so no two encodings of one note verify.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

from attest import merkle
from attest.errors import (
    AttestError,
    BadSignatureError,
    DecodeError,
    ProofError,
    UnsupportedKeyError,
)
from attest.keys import PublicKey, Signer

SIG_TYPE_ED25519 = 0x01
KEY_ID_LEN = 4
#: Bounds on untrusted notes; the spec asks verifiers to accept at least 16 signatures.
MAX_NOTE_BYTES = 64 * 1024
MAX_NOTE_SIGNATURES = 64
_DASH = "\u2014 "
_DECIMAL = re.compile(r"(0|[1-9][0-9]{0,18})")
_KEY_NAME = re.compile(r"[^\s+]+")
#: DER SubjectPublicKeyInfo header of an Ed25519 key (RFC 8410); the 32 key bytes follow.
_ED25519_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")


def _b64decode(text: str, what: str) -> bytes:
    """Strict, canonical standard base64 (RFC 4648 §4)."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise DecodeError(f"{what} is not valid base64") from exc
    if base64.b64encode(raw).decode("ascii") != text:
        raise DecodeError(f"{what} is not canonical base64")
    return raw


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _decimal(text: str, what: str) -> int:
    if not _DECIMAL.fullmatch(text):
        raise DecodeError(f"{what} is not a decimal without leading zeros")
    return int(text)


def _check_text(data: bytes, what: str) -> str:
    if len(data) > MAX_NOTE_BYTES:
        raise DecodeError(f"{what} of {len(data)} bytes exceeds {MAX_NOTE_BYTES}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError(f"{what} is not UTF-8") from exc
    if any(ch < " " and ch != "\n" for ch in text):
        raise DecodeError(f"{what} contains control characters")
    return text


# --- keys --------------------------------------------------------------------------------------


def _check_key_name(name: str) -> None:
    if not _KEY_NAME.fullmatch(name):
        raise DecodeError(f"note key name {name[:40]!r} is empty or holds spaces or '+'")


@dataclass(frozen=True)
class NoteKey:
    """A trusted note-signing key: its name and Ed25519 public key."""

    name: str
    public_key: PublicKey

    def __post_init__(self) -> None:
        _check_key_name(self.name)
        if self.public_key.algorithm != "ed25519":
            raise UnsupportedKeyError("note signatures here are Ed25519 (signature type 0x01)")

    @property
    def key_id(self) -> bytes:
        """SHA-256(name || 0x0A || 0x01 || 32-byte public key)[:4]."""
        material = self.name.encode() + b"\n" + bytes([SIG_TYPE_ED25519]) + self.public_key.raw()
        return hashlib.sha256(material).digest()[:KEY_ID_LEN]

    @classmethod
    def from_vkey(cls, vkey: str) -> NoteKey:
        """Parse a verifier key string `<name>+<hex key id>+<base64(0x01 || key)>`.

        Raises DecodeError when it is malformed or its key id does not match the key.
        """
        name, _, rest = vkey.strip().partition("+")
        hex_id, _, encoded = rest.partition("+")
        raw = _b64decode(encoded, "verifier key")
        if len(raw) != 33 or raw[0] != SIG_TYPE_ED25519:
            raise DecodeError("verifier key is not an Ed25519 (type 0x01) note key")
        try:
            public = PublicKey.from_spki_der(_ED25519_SPKI_PREFIX + raw[1:])
        except AttestError as exc:
            raise DecodeError(f"verifier key holds no valid Ed25519 key: {exc}") from exc
        key = cls(name, public)
        if key.key_id.hex() != hex_id:
            raise DecodeError("verifier key id does not match its name and key")
        return key

    def vkey(self) -> str:
        """The verifier key string `<name>+<hex key id>+<base64(0x01 || key)>` (Go's note)."""
        encoded = _b64(bytes([SIG_TYPE_ED25519]) + self.public_key.raw())
        return f"{self.name}+{self.key_id.hex()}+{encoded}"


# --- signed notes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class NoteSignature:
    """One signature line of a note, parsed but not verified."""

    name: str
    key_id: bytes
    signature: bytes

    def line(self) -> str:
        """The line as written in a note: em dash, space, name, space, base64, newline."""
        return f"{_DASH}{self.name} {_b64(self.key_id + self.signature)}\n"


@dataclass(frozen=True)
class SignedNote:
    """A parsed note: its text (final newline included) and its signature lines, unverified."""

    text: str
    signatures: tuple[NoteSignature, ...]

    def to_bytes(self) -> bytes:
        """The note as bytes: text, a blank line, the signature lines."""
        return (self.text + "\n" + "".join(s.line() for s in self.signatures)).encode("utf-8")


def _parse_signature_line(line: str) -> NoteSignature:
    if not line.startswith(_DASH):
        raise DecodeError("note signature line does not start with an em dash and a space")
    name, sep, encoded = line[len(_DASH) :].partition(" ")
    if not sep:
        raise DecodeError("note signature line has no signature")
    _check_key_name(name)
    raw = _b64decode(encoded, "note signature")
    if len(raw) <= KEY_ID_LEN:
        raise DecodeError("note signature is too short")
    return NoteSignature(name=name, key_id=raw[:KEY_ID_LEN], signature=raw[KEY_ID_LEN:])


def parse_note(data: bytes) -> SignedNote:
    """Split signed-note bytes into text and signature lines. Raises DecodeError."""
    text = _check_text(data, "signed note")
    if not text.endswith("\n"):
        raise DecodeError("signed note does not end with a newline")
    split = text.rfind("\n\n")
    if split < 0:
        raise DecodeError("signed note has no blank line before its signatures")
    body, lines = text[: split + 1], text[split + 2 : -1].split("\n")
    if len(lines) > MAX_NOTE_SIGNATURES:
        raise DecodeError(f"signed note carries more than {MAX_NOTE_SIGNATURES} signatures")
    return SignedNote(text=body, signatures=tuple(_parse_signature_line(x) for x in lines))


def sign_note(text: str, name: str, signer: Signer) -> bytes:
    """Sign note `text` (ending in a newline) with an Ed25519 signer named `name`."""
    key = NoteKey(name, signer.public_key)
    if not text.endswith("\n"):
        raise DecodeError("note text must end with a newline")
    _check_text(text.encode("utf-8"), "note text")
    signature = NoteSignature(name, key.key_id, signer.sign(text.encode("utf-8")))
    return SignedNote(text, (signature,)).to_bytes()


def verify_note(data: bytes, key: NoteKey) -> SignedNote:
    """Return the note if `key` signed it. Signatures by other keys are ignored.

    Raises DecodeError for malformed bytes, ProofError when the key's signature is missing,
    fails to verify, or appears twice.
    """
    note = parse_note(data)
    matching = [s for s in note.signatures if s.name == key.name and s.key_id == key.key_id]
    if not matching:
        raise ProofError(f"note carries no signature by {key.name}")
    if len(matching) > 1:
        raise ProofError(f"note carries more than one signature by {key.name}")
    try:
        key.public_key.verify(matching[0].signature, note.text.encode("utf-8"))
    except BadSignatureError as exc:
        raise ProofError(f"note signature by {key.name} does not verify") from exc
    return note


# --- checkpoints -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    """A log's commitment: its origin, tree size and root hash (plus optional extension lines)."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for line in (self.origin, *self.extensions):
            if not line or "\n" in line:
                raise DecodeError("checkpoint lines must be non-empty single lines")
            _check_text(line.encode("utf-8"), "checkpoint line")
        if not 0 <= self.size <= merkle.MAX_TREE_SIZE:
            raise DecodeError(f"checkpoint tree size {self.size} is out of range")
        if len(self.root) != merkle.HASH_LEN:
            raise DecodeError(f"checkpoint root must be {merkle.HASH_LEN} bytes")

    def text(self) -> str:
        """The note text that is signed."""
        lines = [self.origin, str(self.size), _b64(self.root), *self.extensions]
        return "".join(f"{line}\n" for line in lines)


def parse_checkpoint_text(text: str) -> Checkpoint:
    """Parse a checkpoint's note text (not yet verified). Raises DecodeError."""
    lines = text.split("\n")
    if len(lines) < 4 or lines[-1] != "":
        raise DecodeError("checkpoint needs origin, size and root lines, each ending in newline")
    return Checkpoint(
        origin=lines[0],
        size=_decimal(lines[1], "checkpoint tree size"),
        root=_b64decode(lines[2], "checkpoint root"),
        extensions=tuple(lines[3:-1]),
    )


def sign_checkpoint(checkpoint: Checkpoint, key_name: str, signer: Signer) -> bytes:
    """The signed checkpoint note, signed by an Ed25519 `signer` under `key_name`."""
    return sign_note(checkpoint.text(), key_name, signer)


def verify_checkpoint(data: bytes, key: NoteKey, origin: str | None = None) -> Checkpoint:
    """Verify a signed checkpoint by `key` and return it.

    `origin`, when given, must equal the checkpoint's origin. Raises DecodeError for malformed
    bytes, ProofError for a missing or bad signature or another origin.
    """
    note = verify_note(data, key)
    checkpoint = parse_checkpoint_text(note.text)
    if origin is not None and checkpoint.origin != origin:
        raise ProofError(f"checkpoint origin {checkpoint.origin!r} is not {origin!r}")
    return checkpoint


# --- tlog-proof (c2sp.org/tlog-proof) and consistency proof files ------------------------------

TLOG_PROOF_HEADER = "c2sp.org/tlog-proof@v1"
#: Our own small format: C2SP defines none for consistency proofs.
CONSISTENCY_HEADER = "gpu-attest.dev/consistency-proof@v1"


@dataclass(frozen=True)
class TlogProof:
    """An offline proof that an entry sits at `index` in the tree a signed checkpoint commits to.

    `extra` is unauthenticated by itself. Our verifier puts the logged entry bytes there, which
    the inclusion proof then authenticates.
    """

    index: int
    hashes: tuple[bytes, ...]
    signed_checkpoint: bytes
    extra: bytes | None = None

    def to_bytes(self) -> bytes:
        """The .tlog-proof file contents."""
        lines = [TLOG_PROOF_HEADER]
        if self.extra is not None:
            lines.append(f"extra {_b64(self.extra)}")
        lines.append(f"index {self.index}")
        lines.extend(_b64(h) for h in self.hashes)
        return ("\n".join(lines) + "\n\n").encode("ascii") + self.signed_checkpoint


def _hash_lines(lines: list[str], what: str) -> tuple[bytes, ...]:
    if len(lines) > merkle.MAX_PROOF_HASHES:
        raise DecodeError(f"{what} holds more than {merkle.MAX_PROOF_HASHES} hashes")
    hashes = tuple(_b64decode(line, f"{what} hash") for line in lines)
    if any(len(h) != merkle.HASH_LEN for h in hashes):
        raise DecodeError(f"{what} holds a hash that is not {merkle.HASH_LEN} bytes")
    return hashes


def _keyword(line: str, keyword: str) -> str:
    prefix = keyword + " "
    if not line.startswith(prefix):
        raise DecodeError(f"expected a line starting with {prefix!r}")
    return line[len(prefix) :]


def parse_tlog_proof(data: bytes) -> TlogProof:
    """Parse a .tlog-proof file; the checkpoint is kept verbatim. Raises DecodeError."""
    head, sep, signed_checkpoint = data.partition(b"\n\n")
    if not sep:
        raise DecodeError("tlog-proof has no blank line before its checkpoint")
    lines = _check_text(head, "tlog-proof").split("\n")
    if lines[0] != TLOG_PROOF_HEADER:
        raise DecodeError(f"tlog-proof does not start with {TLOG_PROOF_HEADER}")
    extra = None
    rest = lines[1:]
    if rest and rest[0].startswith("extra "):
        extra = _b64decode(_keyword(rest.pop(0), "extra"), "tlog-proof extra data")
    if not rest:
        raise DecodeError("tlog-proof has no index line")
    index = _decimal(_keyword(rest[0], "index"), "tlog-proof index")
    hashes = _hash_lines(rest[1:], "tlog-proof")
    parse_note(signed_checkpoint)
    return TlogProof(index, hashes, signed_checkpoint, extra)


def verify_tlog_proof(
    data: bytes, entry: bytes, key: NoteKey, origin: str | None = None
) -> tuple[TlogProof, Checkpoint]:
    """Verify that `entry` is logged at the proof's index under a checkpoint signed by `key`.

    Raises DecodeError for malformed input and ProofError when the checkpoint signature,
    origin or inclusion proof does not verify.
    """
    proof = parse_tlog_proof(data)
    checkpoint = verify_checkpoint(proof.signed_checkpoint, key, origin)
    merkle.verify_inclusion(
        merkle.leaf_hash(entry), proof.index, checkpoint.size, proof.hashes, checkpoint.root
    )
    return proof, checkpoint


@dataclass(frozen=True)
class ConsistencyProof:
    """Hashes proving the tree of `old_size` leaves is a prefix of the tree of `new_size`."""

    old_size: int
    new_size: int
    hashes: tuple[bytes, ...]

    def to_bytes(self) -> bytes:
        """The consistency proof file: header, `old N`, `new M`, one base64 hash per line."""
        lines = [CONSISTENCY_HEADER, f"old {self.old_size}", f"new {self.new_size}"]
        lines.extend(_b64(h) for h in self.hashes)
        return ("\n".join(lines) + "\n").encode("ascii")


def parse_consistency_proof(data: bytes) -> ConsistencyProof:
    """Parse a consistency proof file. Raises DecodeError."""
    text = _check_text(data, "consistency proof")
    if not text.endswith("\n"):
        raise DecodeError("consistency proof does not end with a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3 or lines[0] != CONSISTENCY_HEADER:
        raise DecodeError(f"consistency proof does not start with {CONSISTENCY_HEADER}")
    return ConsistencyProof(
        old_size=_decimal(_keyword(lines[1], "old"), "old tree size"),
        new_size=_decimal(_keyword(lines[2], "new"), "new tree size"),
        hashes=_hash_lines(lines[3:], "consistency proof"),
    )


def verify_checkpoint_consistency(
    old: bytes, new: bytes, proof: bytes, key: NoteKey, origin: str | None = None
) -> tuple[Checkpoint, Checkpoint]:
    """Verify two signed checkpoints of one log and that `old` is a prefix of `new`.

    Raises DecodeError for malformed input and ProofError when a signature, the origins, the
    sizes named by the proof or the proof itself do not match.
    """
    old_cp = verify_checkpoint(old, key, origin)
    new_cp = verify_checkpoint(new, key, old_cp.origin)
    parsed = parse_consistency_proof(proof)
    if (parsed.old_size, parsed.new_size) != (old_cp.size, new_cp.size):
        raise ProofError(
            f"proof is for sizes {parsed.old_size} -> {parsed.new_size}, "
            f"checkpoints are {old_cp.size} -> {new_cp.size}"
        )
    merkle.verify_consistency(old_cp.size, new_cp.size, old_cp.root, new_cp.root, parsed.hashes)
    return old_cp, new_cp
