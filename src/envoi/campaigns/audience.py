"""Build a campaign's audience when it starts: its source, streamed into AudienceMember rows.

Memory stays flat in the audience size: the stored CSV is streamed chunk by chunk
(`campaigns.files`) and its lines read one at a time, segment members and API-source
recipients are paged by key, and rows are written in batches of BATCH.
De-duplication is the database's job (the unique (campaign, recipient_key) constraint
with ON CONFLICT DO NOTHING), so no set of a million keys is held here; the number of
duplicates is what was offered minus what was kept.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any, TypeVarTuple

from sqlalchemy import Row, Select, delete, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import InstrumentedAttribute, Session

from envoi.campaigns.files import open_file
from envoi.campaigns.models import AudienceMember, Campaign
from envoi.campaigns.spec import FileKind, SourceType
from envoi.core.csvsource import CsvRowError, CsvSourceError, ErrorLog, read_rows
from envoi.core.errors import Conflict, Invalid
from envoi.core.identity import IDENTIFIERS, Identity
from envoi.profiles.models import Profile
from envoi.segments.models import Segment, SegmentMember
from envoi.sources.models import Source, SourceRecipient

BATCH = 1000
Ts = TypeVarTuple("Ts")


@dataclass(frozen=True)
class _Candidate:
    identity: Identity
    params: dict[str, Any]
    line: int | None
    # Known already for segment members; looked up by identifier otherwise.
    profile_id: int | None = None
    email: str | None = None


class AudienceWriter:
    """Buffers recipients and writes them BATCH at a time, first occurrence winning."""

    def __init__(self, session: Session, campaign: Campaign) -> None:
        self._session = session
        self._campaign_id = campaign.id
        self._project_id = campaign.project_id
        self._pending: list[_Candidate] = []
        self.offered = 0

    def add(self, candidate: _Candidate) -> None:
        self._pending.append(candidate)
        self.offered += 1
        if len(self._pending) >= BATCH:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        unresolved = [c.identity for c in self._pending if c.profile_id is None]
        profiles = iter(resolve_profiles(self._session, self._project_id, unresolved))
        rows = []
        for c in self._pending:
            profile_id, profile_email = (
                (c.profile_id, c.email) if c.profile_id is not None else next(profiles)
            )
            rows.append(
                {
                    "campaign_id": self._campaign_id,
                    "recipient_key": c.identity.key,
                    "profile_id": profile_id,
                    "email": c.identity.email or profile_email,
                    "params": c.params,
                    "line": c.line,
                }
            )
        _insert_ignoring_duplicates(self._session, rows)
        self._pending.clear()


def resolve_profiles(
    session: Session, project_id: int, identities: list[Identity]
) -> list[tuple[int | None, str | None]]:
    """(profile id, profile email) for each identity, or (None, None): one query per batch.

    Like `find_profile`, identifiers are tried uid first; unlike it, identifiers naming
    two different profiles are not an error here: a campaign line is not refused for
    a conflict it cannot fix, it goes to the profile of its first identifier.
    """
    wanted: dict[str, set[str]] = defaultdict(set)
    for identity in identities:
        for name, value in identity.items():
            wanted[name].add(value)
    found: dict[tuple[str, str], tuple[int, str | None]] = {}
    if wanted:
        clauses = [getattr(Profile, name).in_(sorted(values)) for name, values in wanted.items()]
        query = select(Profile.id, Profile.uid, Profile.email, Profile.phone, Profile.wp_token)
        for row in session.execute(query.where(Profile.project_id == project_id, or_(*clauses))):
            for name in IDENTIFIERS:
                value = getattr(row, name)
                if value is not None:
                    found[(name, value)] = (row.id, row.email)
    result: list[tuple[int | None, str | None]] = []
    for identity in identities:
        match = next((found[item] for item in identity.items() if item in found), None)
        result.append(match or (None, None))
    return result


def _insert_ignoring_duplicates(session: Session, rows: list[dict[str, Any]]) -> None:
    dialect_insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = dialect_insert(AudienceMember).on_conflict_do_nothing(
        index_elements=["campaign_id", "recipient_key"]
    )
    session.execute(statement, rows)


def keyset_pages(
    session: Session, query: Select[*Ts], key: InstrumentedAttribute[int], size: int = BATCH
) -> Iterator[Row[*Ts]]:
    """Every row of `query`, fetched `size` at a time in `key` order (`key > last`), so
    memory holds one page whatever the total; `key` must be among the selected columns."""
    after = 0
    while True:
        page = session.execute(query.where(key > after).order_by(key).limit(size)).all()
        yield from page
        if len(page) < size:
            return
        after = getattr(page[-1], key.key)


def _from_csv(stream: IO[bytes], writer: AudienceWriter, errors: ErrorLog) -> int:
    read = 0
    try:
        for item in read_rows(stream):
            read += 1
            if isinstance(item, CsvRowError):
                errors.add(item.line, item.error)
            else:
                writer.add(_Candidate(item.identity, item.params, item.line))
    except CsvSourceError as exc:
        # Checked at upload already; a stored file that is unusable is reported, not a 500.
        errors.add(None, f"the stored list {exc}")
    return read


def _profile_identity(row: Any) -> Identity | None:
    values = {name: getattr(row, name) for name in IDENTIFIERS if getattr(row, name)}
    return Identity(**values) if values else None


def _from_segment(
    session: Session, segment: Segment, writer: AudienceWriter, errors: ErrorLog
) -> int:
    # Imported here: segments depend on profiles, campaigns on segments, never back.
    from envoi.segments.services import generate  # noqa: PLC0415

    try:
        generate(session, segment)
    except Invalid as exc:
        # Not the request's fault (a start has no body): the segment itself is broken.
        raise Conflict(f"segment {segment.id} cannot be generated: {exc.message}") from None
    read = 0
    members = (
        select(Profile.id, Profile.uid, Profile.email, Profile.phone, Profile.wp_token)
        .join(SegmentMember, SegmentMember.profile_id == Profile.id)
        .where(SegmentMember.segment_id == segment.id)
    )
    for row in keyset_pages(session, members, Profile.id):
        read += 1
        identity = _profile_identity(row)
        if identity is None:
            errors.add(None, f"profile {row.id} has no identifier left")
            continue
        writer.add(_Candidate(identity, {}, None, profile_id=row.id, email=row.email))
    return read


def _from_api_source(
    session: Session, campaign: Campaign, writer: AudienceWriter, errors: ErrorLog
) -> int:
    # Checked when the campaign was written; checked again, like a segment, because a
    # source can be deleted since and its id reused (SQLite reuses the highest rowid).
    source = session.get(Source, campaign.source_id) if campaign.source_id else None
    if source is None or source.project_id != campaign.project_id:
        errors.add(None, f"API source {campaign.source_id} no longer exists")
        return 0
    read = 0
    recipients = select(
        SourceRecipient.id,
        SourceRecipient.uid,
        SourceRecipient.email,
        SourceRecipient.phone,
        SourceRecipient.wp_token,
        SourceRecipient.params,
    ).where(SourceRecipient.source_id == source.id)
    for row in keyset_pages(session, recipients, SourceRecipient.id):
        read += 1
        identity = _profile_identity(row)
        if identity is None:  # every row has one; a row without is skipped, not a 500
            errors.add(None, f"API source recipient {row.id} has no identifier")
            continue
        writer.add(_Candidate(identity, dict(row.params), None))
    return read


def merge_additional(session: Session, campaign_id: int, stream: IO[bytes]) -> dict[str, Any]:
    """Merge the additional file's columns into the params of the members it names.

    Its lines are keyed like the address list's (first identifier column, uid first);
    its values win over the list's for the same column, and a later line over an
    earlier one. Lines naming nobody in the audience are counted as `unmatched`.
    """
    errors = ErrorLog()
    totals = {"read": 0, "merged": 0, "unmatched": 0}
    batch: dict[str, dict[str, str]] = {}
    for item in read_rows(stream):
        totals["read"] += 1
        if isinstance(item, CsvRowError):
            errors.add(item.line, item.error)
            continue
        batch.setdefault(item.identity.key, {}).update(item.params)
        if len(batch) >= BATCH:
            _apply_params(session, campaign_id, batch, totals)
    _apply_params(session, campaign_id, batch, totals)
    return totals | {"rejected": errors.count, "errors": errors.errors}


def _apply_params(
    session: Session, campaign_id: int, batch: dict[str, dict[str, str]], totals: dict[str, int]
) -> None:
    if not batch:
        return
    members = session.execute(
        select(AudienceMember.id, AudienceMember.recipient_key, AudienceMember.params).where(
            AudienceMember.campaign_id == campaign_id,
            AudienceMember.recipient_key.in_(list(batch)),
        )
    ).all()
    if members:
        changes = [{"id": m.id, "params": {**m.params, **batch[m.recipient_key]}} for m in members]
        session.execute(update(AudienceMember), changes)
    totals["merged"] += len(members)
    totals["unmatched"] += len(batch) - len(members)
    batch.clear()


def _merge_stored_additional(session: Session, campaign_id: int) -> dict[str, Any] | None:
    stream = open_file(session, campaign_id, FileKind.ADDITIONAL)
    if stream is None:
        return None
    with stream:
        try:
            return merge_additional(session, campaign_id, stream)
        except CsvSourceError as exc:
            return {
                "read": 0,
                "merged": 0,
                "unmatched": 0,
                "rejected": 1,
                "errors": [{"line": None, "error": f"the stored file {exc}"}],
            }


def build_audience(session: Session, campaign: Campaign, now: datetime) -> dict[str, Any]:
    """Replace the campaign's audience with its source's recipients; return the summary
    that is also stored on the campaign (`audience.last_build` in the API)."""
    session.execute(delete(AudienceMember).where(AudienceMember.campaign_id == campaign.id))
    writer = AudienceWriter(session, campaign)
    errors = ErrorLog()
    if campaign.source_type == SourceType.UPLOADED:
        stream = open_file(session, campaign.id, FileKind.SOURCE)
        if stream is None:
            errors.add(None, "no address list is stored")
            read = 0
        else:
            with stream:
                read = _from_csv(stream, writer, errors)
    elif campaign.source_type == SourceType.SEGMENT:
        segment = session.get(Segment, campaign.source_id) if campaign.source_id else None
        if segment is None or segment.project_id != campaign.project_id:
            errors.add(None, f"segment {campaign.source_id} no longer exists")
            read = 0
        else:
            read = _from_segment(session, segment, writer, errors)
    else:
        read = _from_api_source(session, campaign, writer, errors)
    writer.flush()
    count = select(func.count()).select_from(AudienceMember)
    members = AudienceMember.campaign_id == campaign.id
    kept = session.scalar(count.where(members)) or 0
    with_profile = session.scalar(count.where(members, AudienceMember.profile_id.is_not(None)))
    summary: dict[str, Any] = {
        "built_at": now.isoformat(),
        "source_type": campaign.source_type,
        "read": read,
        "accepted": kept,
        "rejected": errors.count,
        "duplicates": writer.offered - kept,
        "with_profile": with_profile or 0,
        "errors": errors.errors,
        "additional": _merge_stored_additional(session, campaign.id),
    }
    campaign.audience_summary = summary
    return summary
