"""The metrics of `serve --workers N` on the one `metrics_listen` port (docs/design.md §10).

Each worker keeps its own collectors (verifier/metrics.py) and serves them on a loopback port of
its own, which it tells the supervisor (METRICS_PORT=, verifier/workerproc.py). A scrape of the
supervisor reads every worker's page and serves the samples with one more label, `worker`, the
worker's index 0..N-1: bounded by the worker count, never by the fleet. Sums across workers are
the scraper's (`sum without (worker) (...)`). A worker that does not answer within
SCRAPE_TIMEOUT_S is left out of that scrape and counted in `..._worker_scrape_failures`.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

#: How long a scrape waits for one worker's page.
SCRAPE_TIMEOUT_S = 2.0


def _fetch(port: int) -> str:
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT_S) as reply:
        text: str = reply.read().decode("utf-8")
    return text


class WorkersCollector(Collector):
    """Every worker's samples, labelled with its index; `ports` is read at each scrape."""

    def __init__(
        self,
        ports: Callable[[], Mapping[int, int]],
        failures: Counter,
        fetch: Callable[[int], str] = _fetch,
    ) -> None:
        self._ports = ports
        self._failures = failures
        self._fetch = fetch

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        for index, port in sorted(self._ports().items()):
            try:
                text = self._fetch(port)
            except (OSError, urllib.error.URLError, ValueError):
                self._failures.inc()
                continue
            for family in text_string_to_metric_families(text):
                merged = families.get(family.name)
                if merged is None:
                    merged = Metric(family.name, family.documentation, family.type)
                    families[family.name] = merged
                for sample in family.samples:
                    merged.add_sample(
                        sample.name, {**sample.labels, "worker": str(index)}, sample.value
                    )
        yield from families.values()


class SupervisorMetrics:
    """The supervisor's registry: the workers' samples and its own few."""

    def __init__(self, ports: Callable[[], Mapping[int, int]]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.workers_serving = Gauge(
            "gpu_attest_verifier_workers_serving",
            "Worker processes of `serve --workers N` that are serving now.",
            registry=r,
        )
        self.worker_restarts = Counter(
            "gpu_attest_verifier_worker_restarts",
            "Worker processes restarted after they died.",
            registry=r,
        )
        failures = Counter(
            "gpu_attest_verifier_worker_scrape_failures",
            "Scrapes that could not read one worker's metrics (it was left out).",
            registry=r,
        )
        r.register(WorkersCollector(ports, failures))
