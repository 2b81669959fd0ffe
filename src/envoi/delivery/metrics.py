"""Prometheus metrics of one delivery worker.

Each worker has a registry of its own (like `web.observability.HttpMetrics`), so
several workers in one process (tests, `envoi serve`) never collide. `envoi worker
--metrics-listen` serves it; `DeliveryService.metrics.registry` exposes it to a host.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# SMTP transactions on loopback take about a millisecond, across the Internet seconds.
_SMTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_DB_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5)


class DeliveryMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.messages = Counter(
            "envoi_delivery_messages_total",
            "Spool rows a worker finished an attempt on, by outcome: delivered, tempfail, "
            "permfail, skipped (refused by the pre-send hook).",
            ["outcome"],
            registry=self.registry,
        )
        self.smtp_seconds = Histogram(
            "envoi_delivery_smtp_seconds",
            "Time a transport took to send one message (connection wait included).",
            registry=self.registry,
            buckets=_SMTP_BUCKETS,
        )
        self.claimed = Counter(
            "envoi_spool_claimed_total",
            "Spool rows claimed (leased) by this worker.",
            registry=self.registry,
        )
        self.released = Counter(
            "envoi_spool_released_total",
            "Claimed rows handed back unsent (their campaign was paused or archived, the "
            "worker stopped, or the claim grew too old).",
            registry=self.registry,
        )
        self.uncertain = Counter(
            "envoi_delivery_uncertain_total",
            "Rows sent again after their worker died while sending them: their recipient "
            "may get the message twice.",
            registry=self.registry,
        )
        self.build_steps = Counter(
            "envoi_spool_build_steps_total",
            "Spool build batches this worker wrote.",
            registry=self.registry,
        )
        self.finished = Counter(
            "envoi_delivery_campaigns_finished_total",
            "Campaigns this worker marked finished.",
            registry=self.registry,
        )
        self.db_seconds = Histogram(
            "envoi_delivery_db_seconds",
            "Time of one database unit of work on the worker's database thread, by "
            "operation: claim, flush (group commit), build, poll.",
            ["operation"],
            registry=self.registry,
            buckets=_DB_BUCKETS,
        )
        self.flush_rows = Histogram(
            "envoi_delivery_flush_rows",
            "Rows (results, marks, releases) written by one group commit.",
            registry=self.registry,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
        )
        self.in_flight = Gauge(
            "envoi_delivery_in_flight",
            "Rows this worker holds in state `sending` right now.",
            registry=self.registry,
        )
        self.queued = Gauge(
            "envoi_delivery_queue_rows",
            "Claimed rows waiting in the worker for an SMTP session.",
            registry=self.registry,
        )
