"""Renewal of the agent key and its client certificate, by `run` (automatic) and `rotate-key`
(by hand), through one code path: agent.rotation's files and agent.client.rotate_key.

`run` renews once less than a third of the certificate's lifetime is left, right after a
receipt has emptied the spool (the spool rule of agent.rotation), with the producer held off
and the Attest stream closed while it begins; the stream reopens with the new pair. A failure
is logged, counted and retried with backoff. After an unanswered attempt the verifier may
already hold the new key: evidence is then signed by it and spooled, and the stream stays
closed (the verifier would refuse that evidence on a stream opened under the old key) until a
retry completes the rotation.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from agent.attestor import Attestor
from agent.client import AGENT_KEY_ALGORITHM, Backoff, RotateRequest, rotate_key
from agent.config import AgentConfig
from agent.identity import KEY_FILE, PENDING_KEY_FILE, Identity, TlsMaterial, load_tls
from agent.logs import get_logger
from agent.metrics import AgentMetrics
from agent.rotation import (
    PendingKey,
    begin_rotation,
    certificate_window,
    finish_install,
    load_pending_key,
    renewal_due_at,
    state_lock,
)
from agent.spool import Spool
from agent.stream import StreamClient
from attest import errors
from attest.hostport import HostPort
from attest.keys import SoftwareSigner, load_private_key

log = get_logger("renewal")
#: The due time is checked again at least this often (the wall clock may be set meanwhile).
_RECHECK_S = 3600.0


class NotifyingSpool(Spool):
    """The spool, also setting `acknowledged` whenever a receipt removes an entry."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        super().__init__(path, max_bytes)
        self.acknowledged = asyncio.Event()

    def acknowledge(self, seq: int, receipt: bytes, now: datetime) -> None:
        super().acknowledge(seq, receipt, now)
        self.acknowledged.set()


def start_rotation(state_dir: Path, spool: Spool) -> PendingKey:
    """The pending key of an unfinished rotation, or a new one if the spool is empty.

    Raises KeyRotationError when envelopes signed by the current key still await receipts.
    """
    pending = load_pending_key(state_dir)
    if pending is not None:
        return PendingKey(pending, fresh=False)
    depth = spool.depth()
    if depth:
        raise errors.KeyRotationError(
            f"{depth} spooled envelope(s) signed by the current key await receipts; run the "
            "agent until the spool is empty, then rotate"
        )
    return begin_rotation(state_dir, AGENT_KEY_ALGORITHM)


async def rotate_by_hand(
    cfg: AgentConfig, identity: Identity, target: HostPort, max_attempts: int
) -> TlsMaterial:
    """`gpu-attest-agent rotate-key`: finish or make one rotation; the daemon must be stopped.

    Raises ConfigError (the daemon holds the state dir), KeyRotationError and its refusal,
    KeyMaterialError, NotEnrolledError.
    """
    with state_lock(cfg.state_dir):
        if finish_install(cfg.state_dir):
            log.warning("finished installing a rotated key that a crash had interrupted")
        current = load_private_key(cfg.state_dir / KEY_FILE)
        tls = load_tls(cfg.state_dir, current)
        spool = Spool.open(cfg.state_dir, cfg.spool_max_bytes)
        try:
            pending = start_rotation(cfg.state_dir, spool)
        finally:
            spool.close()
        request = RotateRequest(target, cfg.state_dir, identity, current, tls)
        backoff = Backoff(cfg.backoff_initial_s, cfg.backoff_cap_s)
        return await rotate_key(request, pending, backoff, max_attempts)


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
            pending = begin_rotation(self._request.state_dir, AGENT_KEY_ALGORITHM)
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
        if isinstance(exc, errors.KeyRotationRefusedError):
            result = "refused"
        elif isinstance(exc, errors.KeyRotationError):
            result = "failed"
        else:
            result = "error"
        self._metrics.count_rotation(result)
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
