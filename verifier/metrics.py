"""Prometheus metrics of the verifier, all named gpu_attest_verifier_* with bounded labels.

Labels only take values from closed sets (result, error code from attest.errors, freshness,
rpc name); never agent ids, GPU UUIDs or sites, whose cardinality grows with the fleet.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    """One set of collectors, registered in its own registry (tests can make many)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.accepted = Counter(
            "gpu_attest_verifier_envelopes_accepted",
            "Envelopes made durable and answered with a receipt.",
            ["freshness"],
            registry=r,
        )
        self.rejected = Counter(
            "gpu_attest_verifier_envelopes_rejected",
            "Envelopes rejected, by stable error code.",
            ["code"],
            registry=r,
        )
        self.streams = Gauge(
            "gpu_attest_verifier_streams_active", "Open Attest streams.", registry=r
        )
        self.waiting = Gauge(
            "gpu_attest_verifier_envelopes_waiting",
            "Envelopes received and waiting for one of the worker's stream.max_inflight "
            "decode slots; above 0 for long, the worker is saturated.",
            registry=r,
        )
        self.latency = Histogram(
            "gpu_attest_verifier_accept_seconds",
            "Time from an envelope's arrival to its receipt being written.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=r,
        )
        self.enrollments = Counter(
            "gpu_attest_verifier_enrollments",
            "Enroll and RotateKey calls, by result.",
            ["rpc", "result"],
            registry=r,
        )
        self.findings_open = Gauge(
            "gpu_attest_verifier_findings_open",
            "Open findings after the last sweep, by rule id.",
            ["rule"],
            registry=r,
        )
        self.transactions = Counter(
            "gpu_attest_verifier_store_transactions",
            "Accept transactions committed; envelopes accepted per transaction is the group "
            "commit's batch size (see store.commit_interval_ms).",
            registry=r,
        )
        self.challenges = Counter(
            "gpu_attest_verifier_challenges_issued", "Challenge nonces issued.", registry=r
        )
        self.store_up = Gauge(
            "gpu_attest_verifier_store_up",
            "1 while the store takes writes, 0 from a failed store operation until a probe "
            "write succeeds (gRPC health is NOT_SERVING meanwhile).",
            registry=r,
        )
        self.store_failures = Counter(
            "gpu_attest_verifier_store_failures",
            "Store operations that failed, by error code.",
            ["code"],
            registry=r,
        )
        self.calls_refused = Counter(
            "gpu_attest_verifier_calls_refused",
            "Calls and streams refused or ended by an admission limit, by reason "
            "(peer-limit, stream-replaced, stream-idle).",
            ["reason"],
            registry=r,
        )
