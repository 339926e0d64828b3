"""Prometheus metrics of the agent (`gpu_attest_agent_*`), served only on a loopback address.

Labels are bounded: `result` takes one of a fixed set of values, never an id or a message.
prometheus_client is imported only when metrics are enabled: it is 4 MB of resident memory
that an agent without `metrics_listen` has no use for.
"""

from __future__ import annotations

from typing import Any, Protocol

from attest.hostport import HostPort

RESULTS = ("produced", "accepted", "rejected", "spool_full", "error")
ROTATION_RESULTS = ("ok", "refused", "failed", "error")
#: Landmark probes (agent.landmarks): a statement kept, or why not.
LANDMARK_RESULTS = ("ok", "unreachable", "refused", "timeout", "malformed", "error")


class _Counter(Protocol):
    def inc(self, amount: float = 1) -> None: ...

    def labels(self, **labels: str) -> Any: ...


class _Gauge(Protocol):
    def set(self, value: float) -> None: ...


class _LabelledGauge(Protocol):
    def labels(self, **labels: str) -> _Gauge: ...


class _Null:
    """Stands in for an instrument when metrics are off."""

    def inc(self, amount: float = 1) -> None:
        """Nothing to count."""

    def set(self, value: float) -> None:
        """Nothing to record."""

    def labels(self, **labels: str) -> _Null:  # noqa: ARG002 - same shape as prometheus
        return self


class AgentMetrics:
    """The agent's metrics in a registry of its own (never the process-global one)."""

    def __init__(self, enabled: bool = True) -> None:
        self.registry: Any = None
        null = _Null()
        self.attestations: _Counter = null
        self.spool_depth: _Gauge = null
        self.spool_full: _Gauge = null
        self.last_receipt: _Gauge = null
        self.stream_connected: _Gauge = null
        self.reconnects: _Counter = null
        self.cert_expiry: _Gauge = null
        self.rotations: _Counter = null
        self.landmark_probes: _Counter = null
        #: Labelled `landmark` by configured address only (a closed set, from agent.toml).
        self.landmark_rtt_min: _LabelledGauge = null
        if enabled:
            self._create()

    def _create(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge  # noqa: PLC0415

        self.registry = registry = CollectorRegistry()
        self.attestations = Counter(
            "gpu_attest_agent_attestations",
            "Attestations by outcome (produced, accepted, rejected, spool_full, error).",
            ["result"],
            registry=registry,
        )
        for result in RESULTS:
            self.attestations.labels(result=result)
        gauges = {
            "spool_depth": ("spool_depth", "Signed envelopes waiting for a receipt."),
            "spool_full": (
                "spool_full",
                "1 while the spool cannot take new evidence (disk full or size cap reached).",
            ),
            "last_receipt": (
                "last_receipt_timestamp_seconds",
                "Unix time of the last verified receipt.",
            ),
            "stream_connected": (
                "stream_connected",
                "1 while the Attest stream is open and challenged.",
            ),
            "cert_expiry": (
                "cert_expiry_timestamp_seconds",
                "Unix time at which the agent's mTLS client certificate expires.",
            ),
        }
        for attr, (name, doc) in gauges.items():
            setattr(self, attr, Gauge(f"gpu_attest_agent_{name}", doc, registry=registry))
        self.reconnects = Counter(
            "gpu_attest_agent_stream_reconnects",
            "Attempts to (re)open the Attest stream.",
            registry=registry,
        )
        self.rotations = Counter(
            "gpu_attest_agent_key_rotations",
            "Key and client-certificate rotations by outcome (ok, refused, failed, error).",
            ["result"],
            registry=registry,
        )
        for result in ROTATION_RESULTS:
            self.rotations.labels(result=result)
        self.landmark_probes = Counter(
            "gpu_attest_agent_landmark_probes",
            "Landmark probes by outcome (ok, unreachable, refused, timeout, malformed, error).",
            ["result"],
            registry=registry,
        )
        for result in LANDMARK_RESULTS:
            self.landmark_probes.labels(result=result)
        self.landmark_rtt_min = Gauge(
            "gpu_attest_agent_landmark_rtt_min_seconds",
            "Least round trip of the last statement kept, per configured landmark address.",
            ["landmark"],
            registry=registry,
        )

    def count(self, result: str) -> None:
        if result not in RESULTS:
            raise ValueError(f"unbounded metric label {result!r}")
        self.attestations.labels(result=result).inc()

    def count_rotation(self, result: str) -> None:
        if result not in ROTATION_RESULTS:
            raise ValueError(f"unbounded metric label {result!r}")
        self.rotations.labels(result=result).inc()

    def count_landmark_probe(self, result: str) -> None:
        if result not in LANDMARK_RESULTS:
            raise ValueError(f"unbounded metric label {result!r}")
        self.landmark_probes.labels(result=result).inc()

    def serve(self, listen: HostPort) -> None:
        """Start the HTTP exporter in a daemon thread; config guarantees a loopback address."""
        from prometheus_client import start_http_server  # noqa: PLC0415

        if self.registry is None:
            self._create()
        start_http_server(listen.port, addr=listen.host, registry=self.registry)
