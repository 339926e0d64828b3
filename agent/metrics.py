"""Prometheus metrics of the agent (`gpu_attest_agent_*`), served only on a loopback address.

Labels are bounded: `result` takes one of a fixed set of values, never an id or a message.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from agent.config import HostPort

RESULTS = ("produced", "accepted", "rejected", "spool_full", "error")


class AgentMetrics:
    """The agent's metrics in a registry of its own (never the process-global one)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.attestations = Counter(
            "gpu_attest_agent_attestations",
            "Attestations by outcome (produced, accepted, rejected, spool_full, error).",
            ["result"],
            registry=self.registry,
        )
        for result in RESULTS:
            self.attestations.labels(result=result)
        self.spool_depth = Gauge(
            "gpu_attest_agent_spool_depth",
            "Signed envelopes waiting for a receipt.",
            registry=self.registry,
        )
        self.spool_full = Gauge(
            "gpu_attest_agent_spool_full",
            "1 while the spool cannot take new evidence (disk full or size cap reached).",
            registry=self.registry,
        )
        self.last_receipt = Gauge(
            "gpu_attest_agent_last_receipt_timestamp_seconds",
            "Unix time of the last verified receipt.",
            registry=self.registry,
        )
        self.stream_connected = Gauge(
            "gpu_attest_agent_stream_connected",
            "1 while the Attest stream is open and challenged.",
            registry=self.registry,
        )
        self.reconnects = Counter(
            "gpu_attest_agent_stream_reconnects",
            "Attempts to (re)open the Attest stream.",
            registry=self.registry,
        )

    def count(self, result: str) -> None:
        if result not in RESULTS:
            raise ValueError(f"unbounded metric label {result!r}")
        self.attestations.labels(result=result).inc()

    def serve(self, listen: HostPort) -> None:
        """Start the HTTP exporter in a daemon thread; config guarantees a loopback address."""
        start_http_server(listen.port, addr=listen.host, registry=self.registry)
