"""Prometheus metrics of the inbound SMTP listener.

A registry per listener (like `web.observability.HttpMetrics` and
`delivery.metrics.DeliveryMetrics`), so several listeners in one process (tests)
never collide; `FeedbackListener.metrics.registry` exposes it to a host.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

# Parsing a report and one small transaction: milliseconds; a storm queues behind the
# listener's few database threads, hence the long tail.
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class InboundMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.reports = Counter(
            "envoi_inbound_reports_total",
            "Reports found in received messages, by kind (bounce, delayed, complaint, "
            "autoreply, not-bounce, unsubscribe) and outcome: recorded, duplicate (the same "
            "message applied before), unmatched (no send found), ignored (nothing to record).",
            ["kind", "outcome"],
            registry=self.registry,
        )
        self.refused = Counter(
            "envoi_inbound_refused_recipients_total",
            "Recipients refused at RCPT, by reason: unknown (not an address envoi receives "
            "at), forged (a bounce or unsubscribe token that does not verify), too_many.",
            ["reason"],
            registry=self.registry,
        )
        self.messages = Counter(
            "envoi_inbound_messages_total",
            "Messages received after DATA, by answer: accepted (250, applied and committed) "
            "or tempfail (451, the database failed: the sender retries).",
            ["answer"],
            registry=self.registry,
        )
        self.quarantined = Counter(
            "envoi_inbound_quarantined_total",
            "Addresses quarantined because of a received report, by reason (nonexistent, "
            "inactive, spam).",
            ["reason"],
            registry=self.registry,
        )
        self.seconds = Histogram(
            "envoi_inbound_processing_seconds",
            "Time from the end of DATA to the answer: waiting for a database thread, "
            "parsing, applying, committing.",
            registry=self.registry,
            buckets=_BUCKETS,
        )
