"""What `serve` runs beside its RPCs: the findings sweep with nonce clean-up, live reconciliation
of accepted evidence, the store probe and the systemd watchdog (fed only while the store takes
writes). Each loop runs until `serve` cancels it at shutdown; a failed round is logged and the
next one tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
from datetime import UTC, datetime, timedelta

from attest.errors import AttestError, ConfigError, PolicyNotFoundError
from attest.sdnotify import Notifier
from verifier import locate, location
from verifier.compliance import LiveCompliance, pack_configured
from verifier.config import VerifierConfig
from verifier.session import Core

log = logging.getLogger(__name__)

#: How often the store is probed with a write (an already expired nonce nobody was sent).
STORE_PROBE_S = 5.0
#: The agent id of probe nonces: outside the agent id grammar, so no agent can ever use one.
PROBE_AGENT_ID = "-store-probe-"


def check_policy(config: VerifierConfig) -> None:
    """A configured policy pack that cannot be had is a configuration error at start, not a
    warning every reconciliation."""
    if not config.policy:
        return
    try:
        pack_configured(config.policy, datetime.now(UTC).date())
    except PolicyNotFoundError as exc:
        raise ConfigError(f"policy: {exc}") from None


async def sweep_loop(core: Core) -> None:
    """Periodic findings (agent-stale, gpu-missing, duplicate-gpu) and nonce clean-up."""
    fleet = core.config.fleet
    grace = timedelta(seconds=fleet.gpu_missing_grace_s)
    while True:
        await asyncio.sleep(fleet.sweep_interval_s)
        now = core.clock()
        try:
            counts = await asyncio.to_thread(core.store.sweep, now, grace)
            # A nonce expires challenge_ttl after issue; its row is kept nonce_retention after
            # issue, which the pipeline relies on to tell a purged nonce from a forged one.
            stream = core.config.stream
            expired_before = now - (stream.nonce_retention - stream.challenge_ttl)
            await asyncio.to_thread(core.store.purge_nonces, expired_before)
        except AttestError as exc:
            log.warning("findings sweep failed: %s", exc)
            continue
        core.metrics.findings_open.clear()
        for rule, count in counts.items():
            core.metrics.findings_open.labels(rule=rule).set(count)
        await location_pass(core, now)


async def location_pass(core: Core, now: datetime) -> None:
    """Check the landmark statements accepted since the last pass and keep the location
    findings in step (docs/design.md §16); a failure is logged and the next sweep tries again."""
    try:
        pack = pack_configured(core.config.policy, now.date())
        done = await asyncio.to_thread(
            locate.run_pass,
            core.store,
            now,
            deadline=core.config.fleet.location_deadline,
            clock_skew=core.config.stream.clock_skew,
            clearance=None if pack is None else location.tier3_clearance(pack, now.date()),
        )
    except AttestError as exc:
        log.warning("location pass failed: %s", exc)
        return
    if done.raised or done.resolved:
        log.info(
            "location: %d site(s) judged, %d statement(s) checked, %d finding(s) raised or "
            "refreshed, %d resolved",
            len(done.judged), done.checked, len(done.raised), len(done.resolved),
        )  # fmt: skip


async def compliance_loop(core: Core, wake: asyncio.Event) -> None:
    """Compliance findings follow the evidence without anyone running `reconcile`
    (docs/design.md §14): a full reconciliation at start, then a `LiveCompliance` step after
    every commit of accepted evidence (`wake`; commits made during a step are taken by the
    next), and at least every fleet.reconcile_interval_s, which picks up what other replicas
    accepted and what a registry import or a revocation changed."""
    interval = core.config.fleet.reconcile_interval_s
    live = LiveCompliance(core.store, core.config.policy)
    pack = ""
    while True:
        wake.clear()
        now = core.clock()
        try:
            changed = await asyncio.to_thread(live.step, now)
        except PolicyNotFoundError as exc:
            log.warning("reconciliation skipped: %s", exc)
        except AttestError as exc:
            log.warning("reconciliation failed: %s", exc)
        else:
            if changed is None or live.pack_id != pack:
                pack = live.pack_id
                log.info("reconciled in full under %s", pack)
            elif changed:
                log.info(
                    "reconciled under %s: %d finding(s) raised or refreshed, %d resolved",
                    pack, len(changed.raised), len(changed.cleared),
                )  # fmt: skip
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout=interval)


async def probe_store(core: Core) -> bool:
    """Write a probe nonce (expired at birth, sent to nobody): a write, since a full disk
    still answers reads. Return whether it took."""
    record = core.nonce_record(PROBE_AGENT_ID)
    record = dataclasses.replace(record, expires_at=record.issued_at)
    return await core.store_health.probe(functools.partial(core.store.issue_nonces, [record]))


async def probe_loop(core: Core) -> None:
    while True:
        await asyncio.sleep(STORE_PROBE_S)
        await probe_store(core)


async def watchdog(notifier: Notifier, core: Core, interval: float) -> None:
    while True:
        core.store_health.feed_watchdog(notifier)
        await asyncio.sleep(interval)
