"""Prometheus metrics of the SMTP submission listener (`sends.submission`)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class SubmissionMetrics:
    """A registry per listener (see `inbound.metrics`), shown at `/metrics`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.auth = Counter(
            "envoi_submission_auth_total",
            "AUTH attempts on the submission port, by outcome: ok, invalid (wrong login or "
            "secret), forbidden (client address outside the project's allowlist), "
            "throttled (too many failures from the address).",
            ["outcome"],
            registry=self.registry,
        )
        self.messages = Counter(
            "envoi_submission_messages_total",
            "Messages after DATA, by answer: accepted (250, sends committed), refused "
            "(5xx: content a send cannot carry) or tempfail (451: the database failed).",
            ["answer"],
            registry=self.registry,
        )
        self.sends = Counter(
            "envoi_submission_sends_total",
            "Sends made from accepted messages, by state (queued, blocked, quarantined).",
            ["state"],
            registry=self.registry,
        )
        self.refused_recipients = Counter(
            "envoi_submission_refused_recipients_total",
            "Recipients refused at RCPT, by reason: invalid (not an address), too_many.",
            ["reason"],
            registry=self.registry,
        )
        self.seconds = Histogram(
            "envoi_submission_processing_seconds",
            "Time from the end of DATA to the answer: parsing, the sends, the commit.",
            registry=self.registry,
            buckets=_BUCKETS,
        )
