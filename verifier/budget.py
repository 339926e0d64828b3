"""Per-agent byte budget: how many bytes of evidence one agent may have accepted per hour.

The decoding policy bounds one envelope (attest/wire/_policy.py) and the rate limiter bounds how
often an agent sends, but an agent sending large envelopes at its allowed rate could still grow
the store by hundreds of megabytes an hour. Each agent has a bucket of `bytes_per_hour` bytes
that refills continuously at that rate; an envelope that does not fit is refused with
`ByteBudgetError` (retryable: the agent's spool keeps it and it fits later), audited like every
rejection. O(1) per envelope.

The buckets are in memory, per process: a restart gives every agent a full bucket, and behind a
load balancer each replica keeps its own, so an agent can at most multiply its budget by the
number of replicas. Bounds the growth rate a hostile agent can cause; not an exact quota.
"""

from __future__ import annotations

from attest.errors import ByteBudgetError
from verifier.ratelimit import AgentBuckets

_HOUR_S = 3600.0


class ByteBudget:
    """Buckets of `bytes_per_hour` per agent (the rate limiter's buckets, counting bytes)."""

    def __init__(self, bytes_per_hour: int, max_tracked: int = 100_000) -> None:
        self.capacity = bytes_per_hour
        self._buckets = AgentBuckets(float(bytes_per_hour), bytes_per_hour / _HOUR_S, max_tracked)

    def reserve(self, agent_id: str, size: int, now: float) -> None:
        """Take `size` bytes from the agent's bucket at monotonic time `now`, or raise
        ByteBudgetError and take nothing."""
        bucket = self._buckets.refilled(agent_id, now)
        if size > bucket.tokens:
            raise ByteBudgetError(
                f"an envelope of {size} bytes would exceed this agent's budget of "
                f"{self.capacity} bytes of evidence per hour; slow down"
            )
        bucket.tokens -= size

    def refund(self, agent_id: str, size: int) -> None:
        """Give back a reservation whose envelope was not accepted after all."""
        bucket = self._buckets.get(agent_id)
        if bucket is not None:
            bucket.tokens = min(self._buckets.capacity, bucket.tokens + size)
