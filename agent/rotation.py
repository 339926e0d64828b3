"""Key rotation and certificate renewal of the agent, in one place: the crash-safe files, the
RotateKey call, `gpu-attest-agent rotate-key` (by hand) and the daemon's renewal task.

Files beside agent.key / agent.crt in the state dir, and the order they change in:

1. agent.key.pending: the next key (0600), written before RotateKey is called (temporary file,
   fsync, rename, fsync of the directory). From here on the agent is committed to it: the
   verifier may pin it and the answer be lost, and a retry of the same request always ends
   with it pinned (RotateKey is idempotent for a repeated request), so evidence produced from
   this point on is signed by the pending key, never by the old one (`signing_key`).
2. The answer is checked (for the pending key, names this agent, issued by the pinned CA) and
   written as agent.crt.pending (same steps).
3. agent.key.pending is renamed over agent.key; the directory is fsync'd.
4. agent.crt.pending is renamed over agent.crt; the directory is fsync'd.

A crash before 1 leaves the old pair; between 1 and 2 the next start retries RotateKey with the
pending key (the old pair still authenticates the call: the verifier takes the retired key's
signature for that one repeat); after 2, `recover` completes the renames at the next start
without the network. No point loses the identity.

The spool rule: envelopes already spooled are signed by the old key, which the verifier stops
accepting once it pins the new one, so a rotation only *begins* with an empty spool
(`begin_rotation` checks it; the caller produces no evidence between that check and step 1).

`run` renews once less than a third of the certificate's lifetime is left, right after a
receipt has emptied the spool, with the producer held off and the Attest stream closed while it
begins; the stream reopens with the new pair. A failure is logged, counted and retried with
backoff. After an unanswered attempt the verifier may already hold the new key: evidence is
then signed by it and spooled, and the stream stays closed (the verifier would refuse that
evidence on a stream opened under the old key) until a retry completes the rotation.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import grpc

from agent.attestor import Attestor
from agent.client import AGENT_KEY_ALGORITHM, RETRYABLE, Backoff, open_channel, utcnow
from agent.config import AgentConfig
from agent.identity import (
    CERT_FILE,
    KEY_FILE,
    PENDING_CERT_FILE,
    PENDING_KEY_FILE,
    Identity,
    TlsMaterial,
    cert_is_for,
    certificate_window,
    check_issued_certificate,
    load_tls,
    make_csr,
    state_lock,
)
from agent.logs import get_logger
from agent.metrics import AgentMetrics
from agent.spool import Spool
from agent.stream import StreamClient
from attest import errors
from attest.envelope import rotation_statement
from attest.files import remove_durably, replace_durably, write_secret_file
from attest.hostport import HostPort
from attest.keys import SoftwareSigner, load_private_key, write_private_key
from attest.v1 import attest_pb2 as pb
from attest.v1 import attest_pb2_grpc as pb_grpc

log = get_logger("rotation")
#: Renew once less than this fraction of the certificate's lifetime is left.
RENEW_WHEN_LEFT = 1 / 3
_ROTATE_TIMEOUT_S = 30.0
#: The due time is checked again at least this often (the wall clock may be set meanwhile).
_RECHECK_S = 3600.0


# --- the files -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PendingKey:
    signer: SoftwareSigner
    #: Created by this call: no RotateKey carrying it can have reached the verifier yet.
    fresh: bool


def load_pending_key(state_dir: Path) -> SoftwareSigner | None:
    """The key of a rotation begun and not installed, or None. Raises KeyMaterialError."""
    path = state_dir / PENDING_KEY_FILE
    return load_private_key(path) if path.exists() else None


def signing_key(state_dir: Path) -> SoftwareSigner:
    """The key evidence is signed by: the pending key while a rotation is unfinished (step 1),
    else agent.key. Raises KeyMaterialError."""
    return load_pending_key(state_dir) or load_private_key(state_dir / KEY_FILE)


def recover(state_dir: Path) -> SoftwareSigner | None:
    """At start, under the state lock: finish an install a crash cut short (steps 3-4), and
    return the pending key of a rotation still unfinished (None: there is none)."""
    if finish_install(state_dir):
        log.warning("finished installing a rotated key that a crash had interrupted")
    return load_pending_key(state_dir)


def begin_rotation(state_dir: Path, spooled: int = 0) -> PendingKey:
    """Step 1: the pending key a previous attempt left, or a new one made durable now.

    A new one needs an empty spool: raises KeyRotationError when `spooled` envelopes (signed
    by the current key) still await receipts.
    """
    existing = load_pending_key(state_dir)
    if existing is not None:
        return PendingKey(existing, fresh=False)
    if spooled:
        raise errors.KeyRotationError(
            f"{spooled} spooled envelope(s) signed by the current key await receipts; run the "
            "agent until the spool is empty, then rotate"
        )
    signer = SoftwareSigner.generate(AGENT_KEY_ALGORITHM)
    write_private_key(state_dir / PENDING_KEY_FILE, signer)
    return PendingKey(signer, fresh=True)


def abandon_rotation(state_dir: Path) -> None:
    """Forget a pending key the verifier cannot have pinned (it refused the only request)."""
    remove_durably(state_dir / PENDING_CERT_FILE, state_dir / PENDING_KEY_FILE)


def install_rotation(state_dir: Path, cert_pem: bytes) -> None:
    """Steps 2-4 for a checked certificate of the pending key."""
    write_secret_file(state_dir / PENDING_CERT_FILE, cert_pem)
    if not finish_install(state_dir):
        raise errors.KeyRotationError("the new certificate is not for the pending key")


def finish_install(state_dir: Path) -> bool:
    """Complete steps 3-4 when agent.crt.pending is there; True when it was installed.

    A pending certificate for neither key (not written by this code) is removed. Raises
    KeyMaterialError when a key file is unreadable.
    """
    cert_path = state_dir / PENDING_CERT_FILE
    try:
        cert_pem = cert_path.read_bytes()
    except FileNotFoundError:
        return False
    pending = load_pending_key(state_dir)
    if pending is not None:
        if not cert_is_for(cert_pem, pending.public_key):
            remove_durably(cert_path)
            return False
        replace_durably(state_dir / PENDING_KEY_FILE, state_dir / KEY_FILE)
    if not cert_is_for(cert_pem, load_private_key(state_dir / KEY_FILE).public_key):
        remove_durably(cert_path)
        return False
    replace_durably(cert_path, state_dir / CERT_FILE)
    return True


# --- when to renew ------------------------------------------------------------------------------


def renewal_due_at(cert_pem: bytes) -> datetime:
    """When less than RENEW_WHEN_LEFT of the certificate's lifetime is left."""
    not_before, not_after = certificate_window(cert_pem)
    return not_after - (not_after - not_before) * RENEW_WHEN_LEFT


# --- RotateKey -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RotateRequest:
    """What RotateKey needs: the enrolled identity and the pair it authenticates with now."""

    target: HostPort
    state_dir: Path
    identity: Identity
    current: SoftwareSigner  # agent.key: signs the hand-over and is the mTLS client key
    tls: TlsMaterial  # the current key's, with the pinned CA


async def rotate_key(
    request: RotateRequest,
    pending: PendingKey,
    backoff: Backoff,
    max_attempts: int = 1,
    clock: Callable[[], datetime] = utcnow,
) -> TlsMaterial:
    """Hand the identity over to `pending` (step 1 done) and install it (steps 2-4).

    Calls RotateKey over mTLS with the current pair, retrying retryable failures up to
    `max_attempts` with backoff, checks the certificate (`check_issued_certificate`) and
    returns the new TLS material. A refusal of a `fresh` key's first request proves the
    verifier never pinned it, so the pending key is abandoned (the current pair stays in use);
    after any unanswered attempt it is kept, since the verifier may hold it. Raises
    KeyRotationRefusedError (the verifier refused), KeyRotationError (unreachable after
    `max_attempts`, or an unusable answer).
    """
    identity, new = request.identity, pending.signer
    statement = rotation_statement(identity.agent_id, new.public_key.spki_der)
    message = pb.RotateKeyRequest(
        agent_id=identity.agent_id,
        new_public_key=new.public_key.spki_der,
        csr=make_csr(new, identity.agent_id),
        old_key_signature=pb.Signature(
            keyid=request.current.public_key.keyid, sig=request.current.sign(statement)
        ),
    )
    response = await _call_rotate_key(request, message, backoff, max_attempts, pending.fresh)
    cert_pem = bytes(response.client_certificate)
    check_issued_certificate(
        cert_pem, ca_pem=request.tls.ca_pem, key=new.public_key, agent_id=identity.agent_id,
        now=clock(),
    )  # fmt: skip
    install_rotation(request.state_dir, cert_pem)
    return TlsMaterial(ca_pem=request.tls.ca_pem, cert_pem=cert_pem, key_pem=new.private_pem())


async def _call_rotate_key(
    request: RotateRequest,
    message: pb.RotateKeyRequest,
    backoff: Backoff,
    max_attempts: int,
    fresh: bool,
) -> pb.RotateKeyResponse:
    maybe_pinned = not fresh
    attempt = 0
    while True:
        channel = open_channel(request.target, request.tls, None, insecure_plaintext=False)
        try:
            stub = pb_grpc.AttestationStub(channel)
            response: pb.RotateKeyResponse = await stub.RotateKey(
                message, timeout=_ROTATE_TIMEOUT_S
            )
        except grpc.aio.AioRpcError as exc:
            details = f"{exc.code().name}: {exc.details()}"
            if exc.code() not in RETRYABLE:
                if not maybe_pinned:
                    abandon_rotation(request.state_dir)
                raise errors.KeyRotationRefusedError(f"key rotation refused ({details})") from exc
            maybe_pinned = True
            attempt += 1
            if attempt >= max_attempts:
                raise errors.KeyRotationError(
                    f"verifier {request.target} did not answer RotateKey after {attempt} "
                    f"attempt(s) ({details}); the pending key is kept for the next try"
                ) from exc
            wait = backoff.delay(attempt)
            log.warning("rotate-key: %s; retrying in %.1fs", details, wait)
            await asyncio.sleep(wait)
        else:
            return response
        finally:
            await channel.close(None)


async def rotate_by_hand(
    cfg: AgentConfig, identity: Identity, target: HostPort, max_attempts: int
) -> TlsMaterial:
    """`gpu-attest-agent rotate-key`: finish or make one rotation; the daemon must be stopped.

    Raises ConfigError (the daemon holds the state dir), KeyRotationError and its refusal,
    KeyMaterialError, NotEnrolledError.
    """
    with state_lock(cfg.state_dir):
        recover(cfg.state_dir)
        current = load_private_key(cfg.state_dir / KEY_FILE)
        tls = load_tls(cfg.state_dir, current)
        spool = Spool.open(cfg.state_dir, cfg.spool_max_bytes)
        try:
            pending = begin_rotation(cfg.state_dir, spool.depth())
        finally:
            spool.close()
        request = RotateRequest(target, cfg.state_dir, identity, current, tls)
        backoff = Backoff(cfg.backoff_initial_s, cfg.backoff_cap_s)
        return await rotate_key(request, pending, backoff, max_attempts)


# --- the daemon's renewal ------------------------------------------------------------------------


class NotifyingSpool(Spool):
    """The spool, also setting `acknowledged` whenever a receipt removes an entry."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        super().__init__(path, max_bytes)
        self.acknowledged = asyncio.Event()

    def acknowledge(self, seq: int, receipt: bytes, now: datetime) -> None:
        super().acknowledge(seq, receipt, now)
        self.acknowledged.set()


@dataclass
class StreamControl:
    """How the renewal closes the daemon's Attest stream and lets it reopen."""

    pause: Callable[[], Awaitable[None]]
    resume: Callable[[], None]


class Renewal:
    """The daemon's renewal task. `pending` is the key of a rotation left unfinished."""

    def __init__(
        self,
        request: RotateRequest,
        pending: SoftwareSigner | None,
        *,
        attestor: Attestor,
        spool: NotifyingSpool,
        stream: StreamClient,
        control: StreamControl,
        metrics: AgentMetrics,
        backoff: Backoff,
        clock: Callable[[], datetime],
    ) -> None:
        self._request = request
        self._pending = pending
        self._attestor = attestor
        self._spool = spool
        self._stream = stream
        self._control = control
        self._metrics = metrics
        self._backoff = backoff
        self._clock = clock
        self._metrics.cert_expiry.set(certificate_window(request.tls.cert_pem)[1].timestamp())

    async def run(self, stop: asyncio.Event, produce_lock: asyncio.Lock) -> None:
        """Renew whenever due until `stop` is set."""
        attempt = 0
        while not stop.is_set():
            if self._pending is not None:
                ok = await self._attempt(PendingKey(self._pending, fresh=False))
            else:
                if not await self._wait_due_and_drained(stop):
                    return
                async with produce_lock:
                    if self._spool.depth():
                        continue  # spooled since the receipt: wait for the next one
                    ok = await self._begin_and_attempt()
            attempt = 0 if ok else attempt + 1
            if not ok:
                await _sleep(stop, self._backoff.delay(attempt))

    async def _begin_and_attempt(self) -> bool:
        """Step 1 and the first request, with production held off by the caller, so that a
        refusal can abandon the fresh key before anything was signed with it."""
        self._spool.acknowledged.clear()
        await self._control.pause()
        try:
            pending = begin_rotation(self._request.state_dir)  # the caller saw an empty spool
        except (errors.AttestError, OSError) as exc:
            self._metrics.count_rotation("error")
            log.error("key rotation could not begin: %s", exc)  # noqa: TRY400 - no traceback
            self._control.resume()
            return False
        self._attestor.use_signer(pending.signer)
        return await self._attempt(pending)

    async def _wait_due_and_drained(self, stop: asyncio.Event) -> bool:
        """Wait until renewal is due and a receipt left the spool empty; False on stop."""
        due = renewal_due_at(self._request.tls.cert_pem)
        while (left := (due - self._clock()).total_seconds()) > 0:
            if await _sleep(stop, min(left, _RECHECK_S)):
                return False
        log.info("client certificate expires %s: renewing the key after the next receipt",
                 certificate_window(self._request.tls.cert_pem)[1].isoformat())  # fmt: skip
        while True:
            # A receipt since the last attempt began counts, even if it came before this wait.
            if self._spool.acknowledged.is_set() and not self._spool.depth():
                return True
            self._spool.acknowledged.clear()
            waiter = asyncio.create_task(self._spool.acknowledged.wait())
            stopper = asyncio.create_task(stop.wait())
            await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            stopper.cancel()
            if stop.is_set():
                return False

    async def _attempt(self, pending: PendingKey) -> bool:
        request = self._request
        try:
            tls = await rotate_key(request, pending, self._backoff, clock=self._clock)
        except (errors.AttestError, OSError) as exc:
            self._failed(exc, pending)
            return False
        self._request = dataclasses.replace(request, current=pending.signer, tls=tls)
        self._pending = None
        self._stream.settings = dataclasses.replace(self._stream.settings, tls=tls)
        not_after = certificate_window(tls.cert_pem)[1]
        self._metrics.cert_expiry.set(not_after.timestamp())
        self._metrics.count_rotation("ok")
        log.info("key rotated: new key %s, client certificate valid until %s; reconnecting",
                 pending.signer.public_key.keyid[:16], not_after.isoformat())  # fmt: skip
        self._control.resume()
        return True

    def _failed(self, exc: errors.AttestError | OSError, pending: PendingKey) -> None:
        refused = isinstance(exc, errors.KeyRotationRefusedError)
        failed = isinstance(exc, errors.KeyRotationError)
        self._metrics.count_rotation("refused" if refused else "failed" if failed else "error")
        code = exc.code if isinstance(exc, errors.AttestError) else "os-error"
        log.error("key rotation failed: %s (%s)", exc, code)
        if not (self._request.state_dir / PENDING_KEY_FILE).exists():
            # Refused before the verifier could hold the new key: keep the current pair.
            self._pending = None
            self._attestor.use_signer(self._request.current)
            self._control.resume()
            return
        self._pending = pending.signer
        log.warning("the stream stays closed until the rotation completes; evidence is "
                    "spooled, signed by the new key")  # fmt: skip


async def _sleep(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep up to `seconds`; True when `stop` was set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    return stop.is_set()
