"""Prometheus metrics of the projector.

A registry per projector (like `inbound.metrics.InboundMetrics`), so several in one
process (tests) never collide; `Projector.metrics.registry` exposes it to a host.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# A batch of the projector: a few milliseconds live, about a second for a full one.
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class ProjectorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.projected = Counter(
            "envoi_events_projected_total",
            "Outbox events written into the event store (an event read twice counts once).",
            registry=self.registry,
        )
        self.cursor = Gauge(
            "envoi_events_projector_cursor",
            "The last outbox id projected: every event up to it is in the event store.",
            registry=self.registry,
        )
        self.lag = Gauge(
            "envoi_events_projector_lag_seconds",
            "Age of the oldest outbox event not projected yet after the last pass (0 when "
            "the store has caught up).",
            registry=self.registry,
        )
        self.holes = Gauge(
            "envoi_events_projector_awaited_ids",
            "Outbox ids skipped by PostgreSQL's sequence and awaited: a transaction that "
            "took them may still commit (they are given up after 60 s: rolled back).",
            registry=self.registry,
        )
        self.errors = Counter(
            "envoi_events_projector_errors_total",
            "Projector passes that failed (the outbox or the store was unavailable); the "
            "next pass starts again from the cursor.",
            registry=self.registry,
        )
        self.seconds = Histogram(
            "envoi_events_projector_batch_seconds",
            "Time to write one batch into the event store.",
            registry=self.registry,
            buckets=_BUCKETS,
        )
