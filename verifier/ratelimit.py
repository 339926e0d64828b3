"""Per-agent token buckets: a misbehaving agent slows itself down, never the others.

A short excess is absorbed by making that agent's stream wait (backpressure through gRPC flow
control); only an agent that would have to wait longer than the bound is refused.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Bucket:
    tokens: float
    updated: float


class AgentBuckets:
    """One token bucket per agent, holding at most `capacity` and refilling at `rate` per
    second. Buckets of agents idle long enough to be full again are forgotten once the table
    reaches `max_tracked`, so memory follows the number of busy agents, not the fleet size.
    Shared by the envelope rate limit and the byte budget (verifier/budget.py)."""

    def __init__(self, capacity: float, rate: float, max_tracked: int) -> None:
        self.capacity = capacity
        self.rate = rate
        self.max_tracked = max_tracked
        self._buckets: dict[str, Bucket] = {}

    def refilled(self, agent_id: str, now: float) -> Bucket:
        """The agent's bucket, refilled up to monotonic time `now` (a new agent's is full)."""
        bucket = self._buckets.get(agent_id)
        if bucket is None:
            if len(self._buckets) >= self.max_tracked:
                self._forget_full(now)
            bucket = self._buckets[agent_id] = Bucket(self.capacity, now)
        else:
            elapsed = max(0.0, now - bucket.updated)
            bucket.tokens = min(self.capacity, bucket.tokens + elapsed * self.rate)
            bucket.updated = now
        return bucket

    def get(self, agent_id: str) -> Bucket | None:
        return self._buckets.get(agent_id)

    def _forget_full(self, now: float) -> None:
        refill = self.capacity / self.rate
        stale = [k for k, b in self._buckets.items() if now - b.updated >= refill]
        for key in stale:
            del self._buckets[key]


class RateLimiter:
    """`rate` envelopes per second per agent with bursts up to `burst`."""

    def __init__(self, rate: float, burst: int, max_tracked: int = 100_000) -> None:
        self.rate = rate
        self._buckets = AgentBuckets(float(burst), rate, max_tracked)

    def acquire(self, agent_id: str, now: float, max_wait: float) -> float | None:
        """Book one token for `agent_id` at monotonic time `now`.

        Returns how long to wait before using it (0.0: at once), or None when that wait would
        exceed `max_wait`, i.e. the agent is over its rate and must be refused.
        """
        bucket = self._buckets.refilled(agent_id, now)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        wait = (1.0 - bucket.tokens) / self.rate
        if wait > max_wait:
            return None
        bucket.tokens -= 1.0
        return wait
