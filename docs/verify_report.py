"""Check a gpu-attest report without gpu-attest: only `cryptography` and the standard library.

    python3 verify_report.py R.json REPORT.pub

Checks the report signature (DSSE over PAE), the checkpoint's Ed25519 note signature under the
log key the report names, the consistency proof from the previous report's checkpoint, and per
sampled entry its RFC 6962 inclusion proof and its agent's ECDSA/Ed25519 signature. Prints one
line per failure and exits 1 if any; prints OK and exits 0 otherwise. docs/verify.md explains
each step. It deliberately shares no code with the project it checks.
"""

import base64
import hashlib
import json
import sys
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec


def say(line):
    sys.stdout.write(line + "\n")


def pae(kind, payload):
    t = kind.encode()
    return b"DSSEv1 %d %b %d %b" % (len(t), t, len(payload), payload)


def verify_sig(key, sig, data):
    if isinstance(key, ec.EllipticCurvePublicKey):
        key.verify(sig, data, ec.ECDSA(hashes.SHA256()))
    else:
        key.verify(sig, data)


def node(left, right):
    return hashlib.sha256(b"\x01" + left + right).digest()


def inclusion_root(leaf, index, size, proof):
    fn, sn, h = index, size - 1, leaf
    for p in proof:
        if fn & 1 or fn == sn:
            h = node(p, h)
            while not fn & 1 and fn:
                fn, sn = fn >> 1, sn >> 1
        else:
            h = node(h, p)
        fn, sn = fn >> 1, sn >> 1
    return h if sn == 0 else None


def consistent(old_size, new_size, old_root, new_root, proof):
    if old_size == new_size:
        return old_root == new_root and not proof
    proof = list(proof)
    if old_size & (old_size - 1) == 0:
        proof.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = proof[0]
    for p in proof[1:]:
        if fn & 1 or fn == sn:
            fr, sr = node(p, fr), node(p, sr)
            while not fn & 1 and fn:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node(sr, p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and fr == old_root and sr == new_root


def checkpoint(note, origin, key):
    """(size, root) of a C2SP signed note, or None when the signature does not verify."""
    text, _, sigs = note.partition("\n\n")
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    key_id = hashlib.sha256(origin.encode() + b"\n\x01" + raw).digest()[:4]
    for line in sigs.splitlines():
        name, _, blob = line.removeprefix("\u2014 ").partition(" ")
        sig = base64.b64decode(blob)
        if name == origin and sig[:4] == key_id:
            try:
                key.verify(sig[4:], (text + "\n").encode())
            except InvalidSignature:
                return None
            lines = text.split("\n")
            return int(lines[1]), base64.b64decode(lines[2])
    return None


def fields(data):
    """Protobuf (field number, value) pairs; only varint and length-delimited are needed."""
    pos = 0
    while pos < len(data):
        key, pos = varint(data, pos)
        if key & 7 == 0:
            value, pos = varint(data, pos)
        elif key & 7 == 2:
            length, pos = varint(data, pos)
            value, pos = data[pos : pos + length], pos + length
        else:
            raise ValueError("unexpected wire type")
        yield key >> 3, value


def varint(data, pos):
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def check_sample(sample, tree_size, root, failures):
    where = f"sample {sample['site']} #{sample['log_index']}"
    raw = base64.b64decode(sample["envelope"])
    proof = [bytes.fromhex(h) for h in sample["inclusion"]]
    leaf = hashlib.sha256(b"\x00" + raw).digest()
    if inclusion_root(leaf, sample["log_index"], tree_size, proof) != root:
        failures.append(f"{where}: inclusion proof fails")
    env = {n: v for n, v in fields(raw) if n in (1, 2)}
    keys = {}
    for der_b64 in sample["agent_keys"]:
        der = base64.b64decode(der_b64)
        keys[hashlib.sha256(der).hexdigest()] = serialization.load_der_public_key(der)
    for n, sig in fields(raw):
        if n == 3:
            s = dict(fields(sig))
            try:
                verify_sig(keys[s[2].decode()], s[1], pae(env[2].decode(), env[1]))
            except (KeyError, InvalidSignature):
                failures.append(f"{where}: agent signature fails")


def main(report_path, key_path):
    key = serialization.load_pem_public_key(Path(key_path).read_bytes())
    document = json.loads(Path(report_path).read_bytes())
    payload = base64.b64decode(document["payload"])
    try:
        sig = base64.b64decode(document["signatures"][0]["sig"])
        key.verify(sig, pae(document["payloadType"], payload))
    except InvalidSignature:
        say("report signature fails")
        return 1
    predicate = json.loads(payload)["predicate"]
    log = predicate["log"]
    log_key = serialization.load_pem_public_key(log["public_key"].encode())
    tree = checkpoint(log["checkpoint"], log["origin"], log_key)
    if tree is None:
        say("checkpoint signature fails")
        return 1
    failures = []
    previous = log.get("previous")
    if previous:
        old = checkpoint(previous["checkpoint"], log["origin"], log_key)
        proof = [bytes.fromhex(h) for h in previous["consistency"]]
        if old is None or not consistent(old[0], tree[0], old[1], tree[1], proof):
            failures.append("consistency with the previous checkpoint fails")
    for sample in predicate["samples"]:
        check_sample(sample, tree[0], tree[1], failures)
    for line in failures:
        say(line)
    if not failures:
        say(f"OK: {len(predicate['samples'])} entries, log size {tree[0]}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
