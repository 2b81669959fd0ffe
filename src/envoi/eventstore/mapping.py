"""An outbox row -> an event row (pure, no I/O).

Declared once, run two ways: `event_row` in Python (imports, tests, a reader of one
row) and `select_sql`, the same mapping as one DuckDB SELECT over a batch of raw
outbox rows, which the projector uses: a Python step per event would cost more than
the whole store's work (docs/benchmarks.md, projector). A test holds the two equal.
The projector does not even hand the store a Python object per row: it reads a chunk
of rows as one string per column (`OutboxColumns`), which `split_sql` splits.

The rules:
- the outbox's own columns are taken as they are (`OUTBOX_COLUMNS`);
- every other column is the `data` key of the same name, cast to the column's type
  (a value of another type becomes None, as DuckDB's `json_transform` does);
- `domain`, when `data` has none, is the recipient's (imported events often lack it);
- `provider` is not in the outbox: the store asks a `ProviderLookup` for it once per
  distinct domain of a batch: `DOMAIN_TABLE` (`core.providers.provider_of`, no I/O),
  or `eventstore.providers.ProviderDirectory`, which asks the MX hosts of a domain
  the table does not know (a company on Google Workspace) and caches the answers;
- a delivery attempt's `tempfail` or `permfail` happened in the SMTP session: its
  `in_band` is True unless `data` says otherwise (inbound reports say False);
- unknown kinds are kept as they are;
- an `erasure` (GDPR: `profiles.erasure`) is no event but an order to the store
  (`Erasure`): it strips the person's events of the project of who they were.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol

from envoi.core.providers import provider_of
from envoi.eventstore.interfaces import OutboxRow
from envoi.eventstore.schema import COLUMNS

OUTBOX_COLUMNS: tuple[str, ...] = (
    "id",
    "project_id",
    "kind",
    "occurred_at",
    "campaign_id",
    "email_id",
    "profile_id",
    "recipient",
)
# What the store computes itself.
COMPUTED: tuple[str, ...] = ("provider", "is_first", "is_first_human")
TYPES: dict[str, str] = {column.name: column.type for column in COLUMNS}
# The columns a store is given (an event row without what it computes); `provider`
# stays: an imported event may bring its own.
GIVEN: tuple[str, ...] = tuple(
    c.name for c in COLUMNS if c.name not in ("is_first", "is_first_human")
)
DATA_KEYS: tuple[str, ...] = tuple(
    name for name in GIVEN if name not in OUTBOX_COLUMNS and name not in COMPUTED
)
IN_BAND_KINDS = ("tempfail", "permfail")
# Joins the text values of a chunk's column (`OutboxColumns`): the unit separator,
# which JSON text never holds unescaped.
SEPARATOR = "\x1f"
# The outbox kind of a GDPR erasure (`profiles.erasure`): an order, not an event.
ERASURE_KIND = "erasure"


class ProviderLookup(Protocol):
    """Recipient domain -> mailbox provider id, for a batch's distinct domains at once."""

    def providers(self, domains: Iterable[str]) -> dict[str, str | None]:
        """The provider of each domain (keys as given; None: unknown). Never raises for
        a domain, and answers in bounded time."""
        ...


class DomainTable:
    """`ProviderLookup` by the provider table alone (no I/O)."""

    def providers(self, domains: Iterable[str]) -> dict[str, str | None]:
        return {domain: provider_of(domain) for domain in domains}


DOMAIN_TABLE = DomainTable()


@dataclass(frozen=True)
class Erasure:
    """What the store forgets of an erased person, in one project: every event linked
    to the profile, or to one of the person's sends (spool row ids), or whose recipient
    has one of the identifiers' erasure hashes (`core.identity.erasure_hash`: the
    address as `email:ADDRESS`, or a recipient that is an identity key itself)."""

    project_id: int
    profile_id: int | None = None
    hashes: tuple[str, ...] = ()
    send_ids: tuple[int, ...] = ()

    @classmethod
    def from_outbox(cls, project_id: int, data: Any) -> Erasure:
        """The erasure an `erasure` outbox row orders (`data`: a dict or its JSON text)."""
        if isinstance(data, str):
            data = json.loads(data)
        found: dict[str, Any] = data if isinstance(data, dict) else {}

        def listed(key: str) -> list[Any]:
            value = found.get(key)
            return value if isinstance(value, list) else []

        return cls(
            project_id=project_id,
            profile_id=_integer(found.get("profile_id")),
            hashes=tuple(h for h in listed("hashes") if isinstance(h, str)),
            send_ids=tuple(i for item in listed("send_ids") if (i := _integer(item)) is not None),
        )


def event_row(
    outbox: Mapping[str, Any], providers: ProviderLookup = DOMAIN_TABLE
) -> dict[str, Any]:
    """The event of an outbox row (keys: `OUTBOX_COLUMNS` and `data`, a dict or its
    JSON text); keys `GIVEN`, with `provider` found from the domain by `providers`."""
    data = outbox.get("data") or {}
    if isinstance(data, str):
        data = json.loads(data)
    row: dict[str, Any] = {name: outbox.get(name) for name in OUTBOX_COLUMNS}
    row["occurred_at"] = naive_utc(row["occurred_at"])
    for name in DATA_KEYS:
        row[name] = coerce(data.get(name), TYPES[name])
    if row["domain"] is None:
        row["domain"] = domain_of(row["recipient"])
    if row["kind"] in IN_BAND_KINDS and row["in_band"] is None:
        row["in_band"] = True
    domain = row["domain"]
    row["provider"] = providers.providers((domain,))[domain] if domain else None
    return row


def naive_utc(value: Any) -> datetime | None:
    """A time as the event table keeps it: naive UTC (an aware time is converted;
    text is SQLite's or ISO 8601)."""
    if value is None:
        return None
    when = datetime.fromisoformat(value) if isinstance(value, str) else value
    if not isinstance(when, datetime):
        raise TypeError(f"not a time: {value!r}")
    if when.tzinfo is not None:
        when = when.astimezone(UTC).replace(tzinfo=None)
    return when


def domain_of(recipient: str | None) -> str | None:
    """The domain of an address, lower-cased; None without an `@`."""
    if not recipient or "@" not in recipient:
        return None
    return recipient.rpartition("@")[2].lower() or None


# --- casts, as DuckDB's json_transform makes them ---------------------------------------


def _integer(value: Any) -> int | None:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def _double(value: Any) -> float | None:
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _boolean(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value != 0
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


def _varchar(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    return None


def _varchar_list(value: Any) -> list[str] | None:
    if not isinstance(value, list):
        return None
    return [text for item in value if (text := _varchar(item)) is not None]


_CASTS: dict[str, Callable[[Any], Any]] = {
    "INTEGER": _integer,
    "BIGINT": _integer,
    "DOUBLE": _double,
    "BOOLEAN": _boolean,
    "VARCHAR": _varchar,
    "VARCHAR[]": _varchar_list,
}


def coerce(value: Any, type_: str) -> Any:
    """`value` as a column of DuckDB type `type_` holds it; None when it is not one."""
    if value is None:
        return None
    return _CASTS[type_](value)


# --- the same mapping in SQL -----------------------------------------------------------


def data_struct() -> str:
    """The `json_transform` structure of the data keys: `{"post": "VARCHAR", ...}`."""
    return json.dumps({name: TYPES[name] for name in DATA_KEYS})


_DOMAIN_OF_RECIPIENT = (
    "CASE WHEN contains(b.recipient, '@') "
    "THEN nullif(lower(split_part(b.recipient, '@', -1)), '') END"
)
# What the store needs of an event before inserting it (its first-occurrence key,
# its domain's provider), for `keys_sql`.
KEY_COLUMNS: tuple[str, ...] = (
    "id",
    "project_id",
    "kind",
    "occurred_at",
    "recipient",
    "post",
    "message",
    "send_id",
    "machine",
    "domain",
)
_KEY_PATHS = ("post", "message", "send_id", "machine", "domain")


def select_sql(batch: str) -> str:
    """A DuckDB SELECT of the `GIVEN` columns (provider None: the store adds it) from
    table `batch`, which has the outbox columns and `data` as JSON text."""
    struct = data_struct().replace("'", "''")
    expressions = []
    for name in GIVEN:
        if name == "occurred_at":
            expressions.append("CAST(b.occurred_at AS TIMESTAMP)")
        elif name in OUTBOX_COLUMNS:
            expressions.append(f"b.{name}")
        elif name == "provider":
            expressions.append("CAST(NULL AS VARCHAR)")
        elif name == "domain":
            expressions.append(f"coalesce(b.d.domain, {_DOMAIN_OF_RECIPIENT})")
        elif name == "in_band":
            kinds = ", ".join(f"'{kind}'" for kind in IN_BAND_KINDS)
            expressions.append(
                f"CASE WHEN b.kind IN ({kinds}) THEN coalesce(b.d.in_band, true) "
                "ELSE b.d.in_band END"
            )
        else:
            expressions.append(f"b.d.{name}")
    pairs = zip(expressions, GIVEN, strict=True)
    columns = ",\n    ".join(f"{expr} AS {name}" for expr, name in pairs)
    return (
        f"SELECT\n    {columns}\n"  # noqa: S608 - names from schema.COLUMNS
        f"FROM (SELECT *, json_transform(data, '{struct}') AS d FROM {batch}) b"
    )


def keys_sql(batch: str) -> str:
    """The `KEY_COLUMNS` of the events `select_sql(batch)` makes, read without
    transforming the whole of `data` (a fifth of the cost)."""
    paths = ", ".join(f"'$.{key}'" for key in _KEY_PATHS)
    found = {key: f"b.x[{index}]" for index, key in enumerate(_KEY_PATHS, start=1)}
    expressions = {
        "occurred_at": "CAST(b.occurred_at AS TIMESTAMP)",
        "send_id": f"TRY_CAST({found['send_id']} AS BIGINT)",
        "domain": f"coalesce({found['domain']}, {_DOMAIN_OF_RECIPIENT})",
    }
    columns = ", ".join(
        f"{expressions.get(name) or found.get(name) or 'b.' + name} AS {name}"
        for name in KEY_COLUMNS
    )
    return (
        f"SELECT {columns} "  # noqa: S608 - names from schema.COLUMNS
        f"FROM (SELECT *, json_extract_string(data, [{paths}]) AS x FROM {batch}) b"
    )


# --- outbox rows as one string per column ------------------------------------------------


class OutboxColumns(NamedTuple):
    """`size` outbox rows as the database joined them, one string per column
    (`OUTBOX_COLUMNS`, then `data`): integers joined by ",", text by SEPARATOR; NULL is
    the empty string, and a recipient (the one text that may be NULL) comes after a "=",
    so that NULL and the empty address stay apart."""

    size: int
    id: str
    project_id: str
    kind: str
    occurred_at: str
    campaign_id: str
    email_id: str
    profile_id: str
    recipient: str
    data: str

    def aligned(self) -> bool:
        """Whether no free text value holds the separator itself (then its column would
        split into more values than rows). `data` is JSON and `occurred_at` a time:
        neither can."""
        return all(text.count(SEPARATOR) == self.size - 1 for text in (self.kind, self.recipient))

    def holds_kind(self, kind: str) -> bool:
        """Whether one of the rows is of `kind`."""
        return f"{SEPARATOR}{kind}{SEPARATOR}" in f"{SEPARATOR}{self.kind}{SEPARATOR}"


# A chunk of a batch: joined columns, or plain rows (those that did not align).
OutboxChunk = OutboxColumns | list[OutboxRow]
_JOINED_TEXT = ("kind", "occurred_at", "recipient", "data")
_JOINED_INTEGERS = {"id": "BIGINT", "project_id": "INTEGER"}
_JOINED_NULLABLE = {"campaign_id": "INTEGER", "email_id": "INTEGER", "profile_id": "INTEGER"}


def joined_columns_sql() -> str:
    """The columns of a DuckDB table of `OutboxColumns` rows."""
    return ", ".join(
        f"{name} {'INTEGER' if name == 'size' else 'VARCHAR'}" for name in OutboxColumns._fields
    )


def split_sql(joined: str) -> str:
    """A DuckDB SELECT of outbox rows (`OUTBOX_COLUMNS` and `data`, as `append_outbox`
    takes them) from table `joined` of `OutboxColumns` rows."""
    names = (*OUTBOX_COLUMNS, "data")
    separators = {name: "chr(31)" if name in _JOINED_TEXT else "','" for name in names}
    values = ", ".join(
        f"unnest(string_split({name}, {separators[name]})) AS {name}" for name in names
    )
    columns = []
    for name in names:
        if name == "recipient":
            columns.append(f"CASE WHEN {name} <> '' THEN substr({name}, 2) END AS {name}")
        elif name in _JOINED_INTEGERS:
            columns.append(f"CAST({name} AS {_JOINED_INTEGERS[name]}) AS {name}")
        elif name in _JOINED_NULLABLE:
            columns.append(f"CAST(nullif({name}, '') AS {_JOINED_NULLABLE[name]}) AS {name}")
        else:
            columns.append(name)
    return f"SELECT {', '.join(columns)} FROM (SELECT {values} FROM {joined})"  # noqa: S608
