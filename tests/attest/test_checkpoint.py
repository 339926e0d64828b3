"""Signed notes, checkpoints and tlog-proof files, against the Go sumdb/note example."""

from __future__ import annotations

import base64
import contextlib

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import given, settings
from hypothesis import strategies as st

from attest import checkpoint as cp
from attest import merkle
from attest.errors import DecodeError, ProofError, UnsupportedKeyError
from attest.keys import SoftwareSigner

# The example of golang.org/x/mod/sumdb/note (package doc and note_test.go): an independent
# implementation's key, text and signature. Ed25519 is deterministic, so signing must
# reproduce the published note byte for byte.
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_SKEY_B64 = "AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_NOTE = (
    GO_TEXT + "\n— PeterNeumann "
    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
).encode()

ORIGIN = "gpu-attest.example/log"


def _go_signer() -> SoftwareSigner:
    seed = base64.b64decode(GO_SKEY_B64)[1:]
    return SoftwareSigner.from_private_key(ed25519.Ed25519PrivateKey.from_private_bytes(seed))


def _signer(seed: int = 1) -> SoftwareSigner:
    key = ed25519.Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32)
    return SoftwareSigner.from_private_key(key)


def _key(signer: SoftwareSigner, name: str = ORIGIN) -> cp.NoteKey:
    return cp.NoteKey(name, signer.public_key)


def _tree(n: int) -> list[bytes]:
    return [merkle.leaf_hash(b"entry-%d" % i) for i in range(n)]


def _signed(n: int, signer: SoftwareSigner | None = None) -> bytes:
    leaves = _tree(n)
    checkpoint = cp.Checkpoint(ORIGIN, n, merkle.root(leaves))
    return cp.sign_checkpoint(checkpoint, ORIGIN, signer or _signer())


def test_go_note_vector() -> None:
    key = cp.NoteKey.from_vkey(GO_VKEY)
    assert key.name == "PeterNeumann"
    assert key.key_id.hex() == "c74f20a3"
    assert key.vkey() == GO_VKEY
    assert key.public_key.raw() == _go_signer().public_key.raw()
    assert cp.verify_note(GO_NOTE, key).text == GO_TEXT
    assert cp.sign_note(GO_TEXT, "PeterNeumann", _go_signer()) == GO_NOTE
    with pytest.raises(ProofError):
        cp.verify_note(GO_NOTE.replace(b"cryptography", b"cryptographY"), key)


@pytest.mark.parametrize(
    "vkey",
    [
        GO_VKEY.replace("c74f20a3", "c74f20a4"),
        GO_VKEY.replace("PeterNeumann", "PeterNeumanx"),
        GO_VKEY[:-2],
        "PeterNeumann",
        "",
    ],
)
def test_bad_vkeys(vkey: str) -> None:
    with pytest.raises(DecodeError):
        cp.NoteKey.from_vkey(vkey)


def test_checkpoint_round_trip_and_text() -> None:
    root = merkle.root(_tree(5))
    signed = _signed(5)
    expected_text = f"{ORIGIN}\n5\n{base64.b64encode(root).decode()}\n"
    assert signed.startswith(expected_text.encode() + b"\n\xe2\x80\x94 " + ORIGIN.encode() + b" ")
    got = cp.verify_checkpoint(signed, _key(_signer()), ORIGIN)
    assert got == cp.Checkpoint(ORIGIN, 5, root)


def test_checkpoint_rejections() -> None:
    signed = _signed(5)
    with pytest.raises(ProofError, match="origin"):
        cp.verify_checkpoint(signed, _key(_signer()), "other.example/log")
    with pytest.raises(ProofError, match="no signature"):
        cp.verify_checkpoint(signed, _key(_signer(2)))
    with pytest.raises(ProofError, match="no signature"):
        cp.verify_checkpoint(signed, _key(_signer(), "other.example/key"))
    # The key's name and id but another key's signature: the known key's signature fails.
    forged = cp.parse_note(_signed(5, _signer(2)))
    impostor = cp.NoteSignature(ORIGIN, _key(_signer()).key_id, forged.signatures[0].signature)
    with pytest.raises(ProofError, match="does not verify"):
        cp.verify_checkpoint(cp.SignedNote(forged.text, (impostor,)).to_bytes(), _key(_signer()))
    doubled = cp.parse_note(signed)
    twice = cp.SignedNote(doubled.text, doubled.signatures * 2).to_bytes()
    with pytest.raises(ProofError, match="more than one"):
        cp.verify_checkpoint(twice, _key(_signer()))


def test_unknown_signatures_are_ignored() -> None:
    signed = cp.parse_note(_signed(5))
    witness = _signer(3)
    extra = cp.NoteSignature("witness.example", b"\x00\x01\x02\x03", witness.sign(b"x"))
    colliding_name = cp.NoteSignature(ORIGIN, b"\xff\xff\xff\xff", b"junk")
    note = cp.SignedNote(signed.text, (extra, colliding_name, *signed.signatures)).to_bytes()
    assert cp.verify_checkpoint(note, _key(_signer())).size == 5


def test_note_keys_must_be_ed25519() -> None:
    with pytest.raises(UnsupportedKeyError):
        cp.NoteKey(ORIGIN, SoftwareSigner.generate("ecdsa-p256-sha256").public_key)
    with pytest.raises(DecodeError):
        cp.NoteKey("has space", _signer().public_key)
    with pytest.raises(DecodeError):
        cp.NoteKey("has+plus", _signer().public_key)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "origin\n",
        "origin\n5\n",
        "\n5\n" + base64.b64encode(bytes(32)).decode() + "\n",
        "origin\n05\n" + base64.b64encode(bytes(32)).decode() + "\n",
        "origin\n-5\n" + base64.b64encode(bytes(32)).decode() + "\n",
        "origin\n5\n" + base64.b64encode(bytes(31)).decode() + "\n",
        "origin\n5\n" + base64.b64encode(bytes(32)).decode(),
        "origin\n5\n" + base64.b64encode(bytes(32)).decode() + "\n\n",
        "origin\n\uff15\n" + base64.b64encode(bytes(32)).decode() + "\n",
    ],
)
def test_bad_checkpoint_texts(text: str) -> None:
    with pytest.raises(DecodeError):
        cp.parse_checkpoint_text(text)


def test_extension_lines_round_trip() -> None:
    checkpoint = cp.Checkpoint(ORIGIN, 3, bytes(32), ("ext one",))
    assert cp.parse_checkpoint_text(checkpoint.text()) == checkpoint


@settings(max_examples=200)
@given(st.data())
def test_any_bit_flip_of_a_signed_checkpoint_is_rejected(data: st.DataObject) -> None:
    signed = _signed(9)
    bit = data.draw(st.integers(0, 8 * len(signed) - 1))
    flipped = bytearray(signed)
    flipped[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises((ProofError, DecodeError)):
        cp.verify_checkpoint(bytes(flipped), _key(_signer()), ORIGIN)


# --- tlog-proof --------------------------------------------------------------------------------


def _tlog_proof(index: int, n: int = 11, extra: bytes | None = None) -> bytes:
    leaves = _tree(n)
    hashes = merkle.inclusion_proof(index, n, leaves)
    return cp.TlogProof(index, hashes, _signed(n), extra).to_bytes()


def test_tlog_proof_round_trip_and_verify() -> None:
    data = _tlog_proof(4, extra=b"entry-4")
    assert data.startswith(b"c2sp.org/tlog-proof@v1\nextra ZW50cnktNA==\nindex 4\n")
    parsed = cp.parse_tlog_proof(data)
    assert parsed.to_bytes() == data
    proof, checkpoint = cp.verify_tlog_proof(data, b"entry-4", _key(_signer()), ORIGIN)
    assert (proof.index, proof.extra, checkpoint.size) == (4, b"entry-4", 11)
    with pytest.raises(ProofError):
        cp.verify_tlog_proof(data, b"entry-5", _key(_signer()), ORIGIN)
    with pytest.raises(ProofError):
        cp.verify_tlog_proof(_tlog_proof(4), b"entry-4", _key(_signer(2)), ORIGIN)


def test_tlog_proof_of_a_single_entry_tree() -> None:
    data = _tlog_proof(0, n=1)
    assert cp.parse_tlog_proof(data).hashes == ()
    cp.verify_tlog_proof(data, b"entry-0", _key(_signer()))


@settings(max_examples=200)
@given(st.data())
def test_any_bit_flip_of_a_tlog_proof_is_rejected(data: st.DataObject) -> None:
    proof = _tlog_proof(6)
    bit = data.draw(st.integers(0, 8 * len(proof) - 1))
    flipped = bytearray(proof)
    flipped[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises((ProofError, DecodeError)):
        cp.verify_tlog_proof(bytes(flipped), b"entry-6", _key(_signer()), ORIGIN)


def test_consistency_between_checkpoints() -> None:
    leaves = _tree(13)
    proof = cp.ConsistencyProof(5, 13, merkle.consistency_proof(5, 13, leaves)).to_bytes()
    assert cp.parse_consistency_proof(proof).old_size == 5
    old, new = _signed(5), _signed(13)
    key = _key(_signer())
    assert cp.verify_checkpoint_consistency(old, new, proof, key)[1].size == 13
    with pytest.raises(ProofError, match="sizes"):
        cp.verify_checkpoint_consistency(_signed(6), new, proof, key)
    with pytest.raises(ProofError):
        cp.verify_checkpoint_consistency(new, old, proof, key)
    rewritten = [merkle.leaf_hash(b"rewritten"), *leaves[1:5]]
    forked = cp.sign_checkpoint(cp.Checkpoint(ORIGIN, 5, merkle.root(rewritten)), ORIGIN, _signer())
    with pytest.raises(ProofError):
        cp.verify_checkpoint_consistency(forked, new, proof, key)


# --- parsers of untrusted text never raise anything but DecodeError ----------------------------

note_like = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=200).map(str.encode),
    st.lists(
        st.sampled_from(
            ["origin", "5", "AAAA", "\u2014 a QUJDREVGRw==", "", "— ", "\u2014 x +", "index 1"]
        ),
        max_size=8,
    ).map(lambda lines: "\n".join(lines).encode()),
)


@given(note_like)
def test_note_parsers_raise_only_decode_errors(data: bytes) -> None:
    for parse in (cp.parse_note, cp.parse_tlog_proof, cp.parse_consistency_proof):
        with contextlib.suppress(DecodeError):
            parse(data)
    with contextlib.suppress(DecodeError):
        cp.parse_checkpoint_text(data.decode("utf-8", "replace"))


@given(note_like)
def test_verifiers_raise_only_attest_errors(data: bytes) -> None:
    key = _key(_signer())
    for check in (
        lambda: cp.verify_checkpoint(data, key),
        lambda: cp.verify_tlog_proof(b"c2sp.org/tlog-proof@v1\nindex 0\n\n" + data, b"", key),
        lambda: cp.verify_checkpoint_consistency(data, data, data, key),
    ):
        with contextlib.suppress(DecodeError, ProofError):
            check()
