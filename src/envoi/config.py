"""Settings, read once from the environment at the edge and passed down.

Every field documents its environment variable, meaning and default; nothing in
business code reads the environment itself.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """envoi's configuration. Each field is read from `ENVOI_<NAME>`."""

    model_config = SettingsConfigDict(env_prefix="ENVOI_", frozen=True)

    database_url: str = Field(
        default="sqlite:///./var/envoi.db",
        description="OLTP store: `sqlite:///path` (embedded, WAL) or `postgresql://user@host/db`.",
    )
    events_url: str = Field(
        default="",
        description="Event store for statistics: `duckdb:///path` (embedded). Empty: "
        "`duckdb:///VAR_DIR/events.duckdb`, beside the generated secret key.",
    )
    http_listen: str = Field(
        default="127.0.0.1:8080",
        description="HOST:PORT where `envoi serve` answers HTTP (APIs, tracking, web UI).",
    )
    smtp_listen: str = Field(
        default="127.0.0.1:2525",
        description="HOST:PORT of the inbound SMTP listener (bounces, complaints).",
    )
    submission_listen: str = Field(
        default="",
        description="HOST:PORT of the SMTP submission listener (mail to send, with AUTH "
        "PLAIN/LOGIN as a project's `login:secret`; docs/smtp-submission.md), e.g. "
        "`127.0.0.1:2587`. Empty: off.",
    )
    submission_tls_cert: str = Field(
        default="",
        description="PEM certificate (chain) file the submission listener offers STARTTLS "
        "with; with ENVOI_SUBMISSION_TLS_KEY. Set: AUTH only after STARTTLS.",
    )
    submission_tls_key: str = Field(
        default="",
        description="PEM private key file of ENVOI_SUBMISSION_TLS_CERT.",
    )
    submission_allow_plaintext_auth: bool = Field(
        default=False,
        description="Let clients AUTH on the submission port without TLS although the "
        "listener is not on loopback (or offers STARTTLS). Off: without a certificate the "
        "listener must be on a loopback address, and refuses to start otherwise.",
    )
    submission_max_message_bytes: int = Field(
        default=10 << 20,
        description="Largest message the submission listener accepts (SIZE); bigger ones get 552.",
    )
    submission_max_recipients: int = Field(
        default=50,
        description="Recipients (RCPT TO) one submitted message may have, each sent as a "
        "send of its own; more get 452 4.5.3.",
    )
    public_url: str = Field(
        default="http://127.0.0.1:8080",
        description="Absolute base URL recipients reach envoi at (tracking links, images).",
    )
    secret_key: str = Field(
        default="",
        description="Key that signs tokens. When empty, one is generated and kept in var_dir.",
    )
    auth_max_failures: int = Field(
        default=30,
        description="Failed Basic-auth attempts a client address may make per minute; "
        "beyond that it gets 429 until the minute has passed.",
    )
    bounce_domain: str = Field(
        default="localhost",
        description="Domain of VERP return paths (`bounces+TOKEN@DOMAIN`) and mailto "
        "unsubscribe addresses, for projects that set none of their own. Its MX must point "
        "at ENVOI_SMTP_LISTEN so bounces come back.",
    )
    default_router: str = Field(
        default="capture",
        description="Router used when a project has no matching rule and no default of its "
        "own: the name of a shared router, or `capture` (keep mail locally, send nothing).",
    )
    deliver_in_process: bool = Field(
        default=True,
        description="Whether `envoi serve` runs the delivery worker itself. Turn off when "
        "separate `envoi worker` processes do the sending.",
    )
    worker_connections: int = Field(
        default=16,
        description="SMTP sessions a delivery worker keeps open at once, over all routers "
        "(each router's and destination's own limits apply within it).",
    )
    worker_lease_seconds: float = Field(
        default=60.0,
        description="How long a delivery worker's claim on spool rows lasts. Rows of a worker "
        "that died are taken over once it ends: leased rows silently, rows that were being "
        "sent as `uncertain` (they may have left). Must exceed the slowest SMTP transaction.",
    )
    worker_batch: int = Field(
        default=500,
        description="Spool rows a delivery worker claims in one query (profiles are loaded "
        "for them in one query too). Smaller batches share a campaign more evenly between "
        "workers; larger ones cost fewer queries.",
    )
    worker_build_batch: int = Field(
        default=1000,
        description="Audience rows turned into spool rows per transaction while a campaign's "
        "spool is built (the build is interleaved with sending, one batch at a time).",
    )
    worker_poll_seconds: float = Field(
        default=0.5,
        description="How often an idle delivery worker looks for due rows, planned campaigns "
        "and unbuilt spools, and how stale its view of paused campaigns may get.",
    )
    scheduler_in_process: bool = Field(
        default=True,
        description="Whether `envoi serve` runs the scheduler (planned starts, automated "
        "campaigns' crontab runs). Several may run against one database: a lease in the "
        "database keeps exactly one active; `envoi worker --scheduler` runs one too.",
    )
    scheduler_tick_seconds: float = Field(
        default=1.0,
        description="How often the scheduler looks for planned campaigns that are due and "
        "crontab times that came: the latest a run may start after its time.",
    )
    scheduler_lease_seconds: float = Field(
        default=30.0,
        description="How long the active scheduler's lease lasts (renewed every third of "
        "it). When its process dies, another scheduler takes over once it expires.",
    )
    router_trusted_hosts: str = Field(
        default="",
        description="Comma-separated host names, addresses or CIDR networks that projects' "
        "smtp and mx routers may connect to although they are private (a relay on the "
        "operator's network; 127.0.0.1 for a local test SMTP server). Other private "
        "addresses are refused, so a project cannot make the workers probe the operator's "
        "network; shared routers and those the operator allowed with `envoi router set ID "
        "--allow-private-network` may reach any address.",
    )
    geoip_database: str = Field(
        default="",
        description="Path of a MaxMind-format (.mmdb) City or Country database that tracking "
        "resolves client addresses with. When empty, the database shipped inside a PyPI "
        "package is used (docs/tracking-rules.md says which, and what it covers).",
    )
    feedback_address: str = Field(
        default="feedback",
        description="Local part of the feedback-loop address (`LOCAL@` a project's bounce "
        "domain) where mailbox providers send ARF complaint reports; VERP bounce addresses "
        "(`bounces+TOKEN@`) are accepted too. Other recipients are refused at RCPT.",
    )
    soft_bounce_limit: int = Field(
        default=3,
        description="Soft bounces (full or recycled mailbox) of one address within "
        "ENVOI_SOFT_BOUNCE_DAYS after which it is quarantined as `inactive`.",
    )
    soft_bounce_days: int = Field(
        default=7,
        description="The window, in days, over which ENVOI_SOFT_BOUNCE_LIMIT counts soft bounces.",
    )
    inbound_max_message_bytes: int = Field(
        default=10 << 20,
        description="Largest report the inbound SMTP listener accepts (SIZE); bigger ones get 552.",
    )
    provider_mx_lookup: bool = Field(
        default=True,
        description="Whether the event store finds the mailbox provider of a recipient domain "
        "the provider table does not know (a company's own domain) by its MX hosts: "
        "Google Workspace gives `google`. Lookups take at most 2 s and are cached "
        "(docs/providers.md). Off: such domains have no provider.",
    )
    provider_dns_servers: str = Field(
        default="",
        description="Comma-separated DNS servers (`ADDRESS`, `ADDRESS:PORT` or `[IPV6]:PORT`) "
        "those MX lookups ask. Empty: the system's (/etc/resolv.conf).",
    )
    var_dir: Path = Field(
        default=Path("./var"),
        description="Directory for the embedded databases and the generated secret key.",
    )

    def resolved_secret_key(self) -> str:
        """The configured key, or the one stored in `var_dir/secret_key` (made on first use)."""
        if self.secret_key:
            return self.secret_key
        path = self.var_dir / "secret_key"
        if path.exists():
            return path.read_text().strip()
        self.var_dir.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(48)
        path.write_text(key + "\n")
        path.chmod(0o600)
        return key

    @property
    def events_store_url(self) -> str:
        """`events_url`, or the store in `var_dir` when it is empty."""
        return self.events_url or f"duckdb:///{self.var_dir / 'events.duckdb'}"

    @property
    def trusted_hosts(self) -> tuple[str, ...]:
        """`router_trusted_hosts` as a list."""
        return tuple(h.strip() for h in self.router_trusted_hosts.split(",") if h.strip())

    @property
    def http_host(self) -> str:
        return self.http_listen.rsplit(":", 1)[0]

    @property
    def http_port(self) -> int:
        return int(self.http_listen.rsplit(":", 1)[1])

    @property
    def smtp_host(self) -> str:
        return self.smtp_listen.rsplit(":", 1)[0]

    @property
    def smtp_port(self) -> int:
        return int(self.smtp_listen.rsplit(":", 1)[1])

    @property
    def submission_host(self) -> str:
        return self.submission_listen.rsplit(":", 1)[0]

    @property
    def submission_port(self) -> int:
        return int(self.submission_listen.rsplit(":", 1)[1])
