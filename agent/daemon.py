"""The long-running agent: attest every interval, on inventory change and when a stream opens;
keep the stream to the verifier open; renew the key and client certificate before they expire
(agent.rotation); speak the systemd notify protocol; drain on SIGTERM; reload the configuration
on SIGHUP.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import cast

from agent.attestor import Attestor, AttestorSettings, HostOverride
from agent.client import Backoff, utcnow
from agent.config import AgentConfig, load_config
from agent.exits import AgentExit
from agent.identity import (
    KEY_FILE,
    Identity,
    load_identity,
    load_tls,
    load_verifier_key,
    state_lock,
)
from agent.landmarks import LandmarkBook, LandmarkRunner
from agent.logs import get_logger, setup_logging
from agent.metrics import AgentMetrics
from agent.ports import InventorySource
from agent.rotation import (
    NotifyingSpool,
    Renewal,
    RotateRequest,
    StreamControl,
    recover,
    signing_key,
)
from agent.spool import Spool
from agent.stream import StreamClient, StreamSettings
from attest import errors
from attest.hostport import HostPort, parse_host_port, require_loopback
from attest.keys import SoftwareSigner, load_private_key
from attest.sdnotify import Notifier

log = get_logger("daemon")


def open_inventory(simulate: Path | None) -> tuple[InventorySource, HostOverride]:
    """The simulated machine when asked for, else the real driver through NVML."""
    if simulate is not None:
        from agent.simulate import SimulatedInventory, load_machine  # noqa: PLC0415

        machine = load_machine(simulate)
        host = machine.host
        return SimulatedInventory(machine), HostOverride(
            host.hostname or None, host.machine_id or None, host.site or None
        )
    from agent.nvml import NvmlInventory  # noqa: PLC0415 - pynvml only when really used

    return NvmlInventory(), HostOverride()


@dataclass
class Runtime:
    """What `run` and `once` open from the state dir; `close` releases it."""

    identity: Identity
    signer: SoftwareSigner
    spool: Spool
    inventory: InventorySource
    attestor: Attestor
    #: Landmark statements waiting for the next evidence (None: no landmark configured).
    landmarks: LandmarkBook | None = None

    def close(self) -> None:
        self.inventory.close()
        self.spool.close()


def open_runtime(cfg: AgentConfig, spool_type: type[Spool] = Spool) -> Runtime:
    """Open identity, key, spool and inventory. Evidence is signed by the pending key while a
    rotation is unfinished (agent.rotation, step 1). Raises NotEnrolledError, KeyMaterialError,
    StoreError, InventoryError (machine file)."""
    identity = load_identity(cfg.state_dir)
    key_file = cfg.state_dir / KEY_FILE
    signer = signing_key(cfg.state_dir)
    inventory, override = open_inventory(cfg.simulate)
    try:
        spool = spool_type.open(cfg.state_dir, cfg.spool_max_bytes)
    except BaseException:
        inventory.close()
        raise
    settings = AttestorSettings(
        agent_id=identity.agent_id,
        site_id=identity.site_id,
        host_root=cfg.host_root,
        state_dir=cfg.state_dir,
        key_file=key_file,
        host_override=override,
        full_every=(
            timedelta(seconds=cfg.full_evidence_interval_s)
            if cfg.full_evidence_interval_s > 0
            else None
        ),
    )
    book = LandmarkBook() if cfg.landmarks else None
    attestor = Attestor(settings, signer, spool, inventory, book)
    return Runtime(identity, signer, spool, inventory, attestor, book)


def verifier_target(cfg: AgentConfig, identity: Identity) -> HostPort:
    target = cfg.verifier or parse_host_port(identity.verifier, "identity.toml verifier")
    if cfg.insecure_plaintext:
        require_loopback(target, "insecure_plaintext")
    return target


class Daemon:
    """`gpu-attest-agent run`. `reload_config` re-reads the file given at start (SIGHUP)."""

    def __init__(
        self,
        cfg: AgentConfig,
        reload_config: Callable[[], AgentConfig],
        notifier: Notifier,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.cfg = cfg
        self._reload_config = reload_config
        self._notifier = notifier
        self._clock = clock
        self.metrics = AgentMetrics(enabled=cfg.metrics_listen is not None)
        self._stop = asyncio.Event()
        self._spool_full = False
        #: Held while evidence is produced, and while a rotation begins.
        self._produce_lock = asyncio.Lock()
        #: The stream may run (set unless a rotation is under way) / stop it / it has stopped.
        self._stream_go = asyncio.Event()
        self._stream_stop = asyncio.Event()
        self._stream_idle = asyncio.Event()
        self._stream_idle.set()
        self._renewal: Renewal | None = None
        #: The Attest stream client, once `run` has opened the runtime.
        self.stream: StreamClient | None = None

    async def run(self) -> int:
        with state_lock(self.cfg.state_dir):
            return await self._run(recover(self.cfg.state_dir))

    async def _run(self, pending: SoftwareSigner | None) -> int:
        """Serve with the state dir locked; `pending` is the key of an unfinished rotation."""
        cfg = self.cfg
        runtime = open_runtime(cfg, NotifyingSpool)
        try:
            target = verifier_target(cfg, runtime.identity)
            if cfg.insecure_plaintext:
                log.warning(
                    "INSECURE: plaintext gRPC to %s (insecure_plaintext): tests only", target
                )
            current = load_private_key(cfg.state_dir / KEY_FILE)
            tls = None if cfg.insecure_plaintext else load_tls(cfg.state_dir, current)
            stream = StreamClient(
                StreamSettings(
                    target=target,
                    identity=runtime.identity,
                    verifier_key=load_verifier_key(cfg.state_dir),
                    tls=tls,
                    insecure_plaintext=cfg.insecure_plaintext,
                    backoff=Backoff(cfg.backoff_initial_s, cfg.backoff_cap_s),
                ),
                runtime.spool,
                self.metrics,
                self._clock,
                on_base_refused=runtime.attestor.forget_full,
            )
            self.stream = stream
            if tls is not None:
                self._renewal = Renewal(
                    RotateRequest(target, cfg.state_dir, runtime.identity, current, tls),
                    pending, attestor=runtime.attestor,
                    spool=cast(NotifyingSpool, runtime.spool), stream=stream,
                    control=StreamControl(self._pause_stream, self._stream_go.set),
                    metrics=self.metrics, backoff=Backoff(cfg.backoff_initial_s, cfg.backoff_cap_s),
                    clock=self._clock,
                )  # fmt: skip
            if pending is None:
                self._stream_go.set()
            elif tls is None:
                raise errors.ConfigError(
                    "a key rotation is unfinished and needs mTLS; insecure_plaintext is set"
                )
            else:
                log.warning("a key rotation is unfinished: completing it before the stream opens")
            if cfg.metrics_listen is not None:
                self.metrics.serve(cfg.metrics_listen)
            self.metrics.spool_depth.set(runtime.spool.depth())
            landmarks = self._start_landmarks(runtime)
            try:
                return await self._serve(runtime, stream)
            finally:
                if landmarks is not None:
                    await asyncio.to_thread(landmarks.stop)
        finally:
            runtime.close()

    def _start_landmarks(self, runtime: Runtime) -> LandmarkRunner | None:
        """Probe the configured landmarks now and every landmark_interval, in a thread of
        their own; what they sign goes into the next evidence (agent.landmarks)."""
        if runtime.landmarks is None:
            return None
        state_dir = self.cfg.state_dir
        runner = LandmarkRunner(
            self.cfg.landmarks,
            agent_id=runtime.identity.agent_id,
            # The key evidence is signed by now, read again each cycle (a rotation changes it).
            signer=lambda: signing_key(state_dir),
            book=runtime.landmarks,
            metrics=self.metrics,
            interval_s=self.cfg.landmark_interval_s,
        )
        runner.start()
        log.info(
            "probing %d landmark(s) every %gs",
            len(self.cfg.landmarks),
            self.cfg.landmark_interval_s,
        )
        return runner

    async def _serve(self, runtime: Runtime, stream: StreamClient) -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stop)
        loop.add_signal_handler(signal.SIGINT, self.stop)
        loop.add_signal_handler(signal.SIGHUP, self._reload)
        tasks = [
            asyncio.create_task(self._stream_loop(stream), name="stream"),
            asyncio.create_task(self._produce_loop(runtime.attestor, stream), name="producer"),
            asyncio.create_task(self._watchdog_loop(), name="watchdog"),
        ]
        if self._renewal is not None:
            renewal = self._renewal.run(self._stop, self._produce_lock)
            tasks.append(asyncio.create_task(renewal, name="renewal"))
        log.info(
            "agent %s started: verifier %s, interval %gs, spool depth %d",
            runtime.identity.agent_id,
            stream.settings.target,
            self.cfg.interval_s,
            runtime.spool.depth(),
        )
        self._notifier.ready(f"attesting to {stream.settings.target}")
        try:
            await self._stop.wait()
            log.info("stopping: draining the stream")
            self._notifier.stopping()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(tasks[0]), timeout=10.0)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
        log.info("stopped; %d envelopes remain spooled", runtime.spool.depth())
        return AgentExit.OK

    def stop(self) -> None:
        self._stop.set()
        self._stream_stop.set()

    async def _stream_loop(self, stream: StreamClient) -> None:
        """Run the stream while it may run; a rotation closes it and reopens it afterwards,
        so that the next connection presents the new client certificate."""
        while not self._stop.is_set():
            go = asyncio.create_task(self._stream_go.wait())
            stop = asyncio.create_task(self._stop.wait())
            await asyncio.wait({go, stop}, return_when=asyncio.FIRST_COMPLETED)
            go.cancel()
            stop.cancel()
            if self._stop.is_set():
                return
            if not self._stream_go.is_set():
                continue  # paused again before this task ran
            self._stream_stop = asyncio.Event()
            self._stream_idle.clear()
            try:
                await stream.run(self._stream_stop)
            finally:
                self._stream_idle.set()

    async def _pause_stream(self) -> None:
        """Close the stream (draining what was sent) and keep it closed until resumed."""
        self._stream_go.clear()
        self._stream_stop.set()
        await self._stream_idle.wait()

    def _reload(self) -> None:
        self._notifier.reloading()
        try:
            new = self._reload_config()
        except errors.ConfigError as exc:
            log.error("reload refused, keeping the running configuration: %s", exc)  # noqa: TRY400
            self._notifier.ready()
            return
        restart_only = (
            "verifier", "state_dir", "simulate", "insecure_plaintext", "metrics_listen",
            "landmarks", "landmark_interval_s",
        )  # fmt: skip
        for name in restart_only:
            if getattr(new, name) != getattr(self.cfg, name):
                log.warning("reload: %s changed; it takes effect at the next restart", name)
        self.cfg = self.cfg.with_overrides(
            interval_s=new.interval_s,
            inventory_poll_s=new.inventory_poll_s,
            log_format=new.log_format,
        )
        setup_logging(self.cfg.log_format)
        log.info("configuration reloaded: interval %gs", self.cfg.interval_s)
        self._notifier.ready()

    async def _produce_loop(self, attestor: Attestor, stream: StreamClient) -> None:
        loop = asyncio.get_running_loop()
        next_due = loop.time() + self.cfg.interval_s
        next_poll = loop.time() + self.cfg.inventory_poll_s
        while not self._stop.is_set():
            timeout = max(0.0, min(next_due, next_poll) - loop.time())
            opened = asyncio.create_task(stream.opened.wait())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(opened), timeout=timeout)
            opened.cancel()
            if self._stop.is_set():
                return
            now_mono = loop.time()
            due = stream.opened.is_set() or now_mono >= next_due
            stream.opened.clear()
            if not due and now_mono >= next_poll:
                next_poll = now_mono + self.cfg.inventory_poll_s
                due = await asyncio.to_thread(attestor.inventory_changed)
                if due:
                    log.info("inventory changed: attesting now")
            if due:
                async with self._produce_lock:
                    await self._produce(attestor, stream)
                next_due = loop.time() + self.cfg.interval_s

    async def _produce(self, attestor: Attestor, stream: StreamClient) -> None:
        now = self._clock()
        nonce = stream.take_nonce(now)
        try:
            inventory = await asyncio.to_thread(attestor.collect_inventory, nonce or None)
            entry = attestor.produce(nonce, now, inventory)
        except errors.SpoolFullError as exc:
            self.metrics.count("spool_full")
            self.metrics.spool_full.set(1)
            if not self._spool_full:
                log.error("%s (%s)", exc, exc.code)  # noqa: TRY400
            self._spool_full = True
            return
        except errors.AttestError as exc:
            self.metrics.count("error")
            log.error("attestation failed: %s (%s)", exc, exc.code)  # noqa: TRY400
            return
        except Exception:
            # One failed cycle (e.g. a reading the contract refuses) must not stop attesting.
            self.metrics.count("error")
            log.exception("attestation failed")
            return
        if self._spool_full:
            log.info("spool has room again: producing evidence")
        self._spool_full = False
        self.metrics.spool_full.set(0)
        self.metrics.count("produced")
        self.metrics.spool_depth.set(attestor.spool_depth())
        log.info("spooled seq %d (%s)", entry.seq, "nonce" if nonce else "offline")
        stream.spooled()

    async def _watchdog_loop(self) -> None:
        interval = self._notifier.watchdog_interval_s
        if interval is None:
            return
        while not self._stop.is_set():
            self._notifier.watchdog()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=interval)


def run_daemon(cfg: AgentConfig, config_path: Path | None, overrides: dict[str, object]) -> int:
    """Run until SIGTERM; return the exit status. Raises AttestError subclasses at start-up."""

    def reload() -> AgentConfig:
        return load_config(config_path).with_overrides(**overrides)

    daemon = Daemon(cfg, reload, Notifier())
    return asyncio.run(daemon.run())
