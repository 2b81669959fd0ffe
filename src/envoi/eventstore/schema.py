"""The wide event table: its columns, what each holds, and its DuckDB DDL (no I/O).

One row per fact. Every dimension a statistics surface groups or filters by is a
column of its own (DESIGN.md: event store), read once from the outbox event's
`data` by the projector, so a query never parses JSON. A ClickHouse store (a later
issue) keeps the same columns and names.
"""

from __future__ import annotations

from typing import NamedTuple


class Column(NamedTuple):
    name: str
    type: str  # DuckDB type
    doc: str


COLUMNS: tuple[Column, ...] = (
    Column("id", "BIGINT", "the outbox row's id; imported events get ids from IMPORT_ID_BASE"),
    Column("project_id", "INTEGER", "the project (every query filters on it)"),
    Column(
        "kind",
        "VARCHAR",
        "queued, blocked, quarantined, delivered, tempfail, permfail, bounce, open, "
        "click, mirror, unsubscribe, complaint, forward, goal",
    ),
    Column("occurred_at", "TIMESTAMP", "when it happened, UTC"),
    Column("campaign_id", "INTEGER", "the campaign (None: a message outside campaigns)"),
    Column("post", "VARCHAR", "the campaign's key, `S_12` (seed 002's post)"),
    Column("post_type", "VARCHAR", "S, B or A"),
    Column("message", "VARCHAR", "the email's key, `L_34` (an A/B variant is its own email)"),
    Column("message_type", "VARCHAR", "the campaign's message type"),
    Column("email_id", "INTEGER", "the email's id"),
    Column("send_id", "BIGINT", "the spool row: one message to one recipient"),
    Column("profile_id", "INTEGER", "the recipient's profile, when there is one"),
    Column("recipient", "VARCHAR", "the recipient's address, lower-cased"),
    Column("domain", "VARCHAR", "the recipient's domain"),
    Column("provider", "VARCHAR", "the mailbox provider of the domain (core.providers)"),
    Column("router", "VARCHAR", "the sending route"),
    Column("tags", "VARCHAR[]", "the campaign's tags"),
    Column("link", "INTEGER", "click: the link's index in the message"),
    Column("url", "VARCHAR", "click: the link's target"),
    Column(
        "reason",
        "VARCHAR",
        "blocked / quarantined: the skip reason (noaddress, invalid, nonexistent, spam, "
        "unsubscribed, gdpr, inactive, category_unsubscribed, sent_quarantine, "
        "external_check ...); permfail: the bounce class (legacy)",
    ),
    Column("bounce_class", "VARCHAR", "seed 001's eight classes"),
    Column("bounce_reason", "VARCHAR", "core.bounces' fine-grained reason"),
    Column("smtp_code", "INTEGER", "the SMTP reply code"),
    Column("smtp_status", "VARCHAR", "the RFC 3463 enhanced status code"),
    Column("error_code", "INTEGER", "seed 003's numeric error code"),
    Column("hard", "BOOLEAN", "a hard bounce"),
    Column("in_band", "BOOLEAN", "bounce / tempfail: in the SMTP session (True) or reported later"),
    Column("client", "VARCHAR", "email client (tracking.clients)"),
    Column("device", "VARCHAR", "Desktop, Mobile, Tablet, Webmail, Proxy, Bot, Other"),
    Column("os", "VARCHAR", "operating system"),
    Column("language", "VARCHAR", "the language of the variant sent"),
    Column("country_code", "VARCHAR", "ISO 3166 code of the hit's address"),
    Column("country_name", "VARCHAR", "country of the hit's address"),
    Column("region_name", "VARCHAR", "region of the hit's address"),
    Column("city_name", "VARCHAR", "city of the hit's address"),
    Column("machine", "VARCHAR", "None: a person; else the flag (apple_mpp, prefetch, scanner)"),
    Column("handled", "BOOLEAN", "complaint: the profile was found and unsubscribed"),
    Column("method", "VARCHAR", "unsubscribe: one-click, page or mailto"),
    Column("goal", "VARCHAR", "goal: its name"),
    Column("value", "DOUBLE", "goal: its value"),
    Column("uncertain", "BOOLEAN", "delivery: may have been delivered twice (crash)"),
    Column(
        "is_first",
        "BOOLEAN",
        "the first event of this kind for this (post, recipient): unique counts sum it, "
        "so they are counted in the period of the first occurrence (seed 001)",
    ),
    Column(
        "is_first_human",
        "BOOLEAN",
        "the first event of this kind for this (post, recipient) made by a person "
        "(machine is None): unique human counts sum it",
    ),
)

NAMES: tuple[str, ...] = tuple(column.name for column in COLUMNS)
IMPORT_ID_BASE = 1 << 60  # imported events' ids: far above any outbox id
TABLE = "events"


def create_table_sql(table: str = TABLE) -> str:
    """The table's DDL. No primary key: its index tripled DuckDB's insert cost, and the
    store keeps ids unique itself (an anti-join on the batch's id range)."""
    columns = ",\n    ".join(f"{c.name} {c.type}" for c in COLUMNS)
    return f"CREATE TABLE IF NOT EXISTS {table} (\n    {columns}\n)"
