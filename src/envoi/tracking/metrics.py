"""Prometheus metrics of the tracking endpoints.

Registered in the app's own registry (`web.observability.HttpMetrics.registry`), so
`/metrics` shows them beside the API's: tracking hits never pass through the HTTP
metrics middleware (`tracking.api` answers them before it).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

KINDS = ("open", "click", "mirror", "unsubscribe", "forward", "goal")
_DB_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5)


class TrackingMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.hits = Counter(
            "envoi_tracking_hits_total",
            "Tracking hits with a genuine token, by kind and result: recorded (an outbox "
            "event written), unknown (the send is gone), none (nothing to record: an "
            "unsubscribe already done, a page shown), refused (bad input, a limit reached), "
            "failed (the database did not take it: answered 503).",
            ["kind", "result"],
            registry=self.registry,
        )
        self.forged = Counter(
            "envoi_tracking_forged_total",
            "Tracking hits whose token did not verify (forged, altered, of another purpose): "
            "answered without recording anything.",
            ["kind"],
            registry=self.registry,
        )
        self.batch_hits = Histogram(
            "envoi_tracking_batch_hits",
            "Hits written by one group commit of the tracking recorder.",
            registry=self.registry,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
        )
        self.commit_seconds = Histogram(
            "envoi_tracking_commit_seconds",
            "Time of one group commit of the tracking recorder (load, write, commit).",
            registry=self.registry,
            buckets=_DB_BUCKETS,
        )
        # Children bound once: `labels()` costs a lock and a dict look-up per call.
        self._forged = {kind: self.forged.labels(kind) for kind in KINDS}

    def forged_hit(self, kind: str) -> None:
        self._forged[kind].inc()
