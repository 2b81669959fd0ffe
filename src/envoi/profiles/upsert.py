"""Users upsert, single and bulk (seed 002 `POST /users`, `POST /users/bulk`).

Both go through one batch path, built for 10,000 items per request:

1. every item is read into a `ProfileChange` (no I/O; a bad item fails alone);
2. items naming the same profile are refused together (the seed forbids them);
3. existing profiles are looked up with one `IN (...)` query per chunk of items, then
   locked and read afresh in id order (`_lock_profiles`);
4. each item resolves to one profile or none; identifiers naming two profiles are a
   conflict; an update older than the stored `update_profile_last_updated_at` is stale;
5. the rest is written in the caller's transaction: new profiles in batched INSERTs,
   changed ones in batched UPDATEs, then subscriptions, then erasures are lifted.

Concurrent requests. Fields are merged in Python, and the stale check compares with
the stored time, so both need the row as it is when written: on PostgreSQL the rows
are locked (`SELECT ... FOR UPDATE`) before they are read, and a concurrent writer of
the same profile waits for this transaction to end; on SQLite every write transaction
runs under `BEGIN IMMEDIATE`, so writers are serialised already. Steps 3 to 5 run in a
SAVEPOINT: when another request inserts a profile with one of the identifiers between
the lookup and the INSERT (a unique violation), or PostgreSQL picks this transaction
as a deadlock victim, the savepoint is rolled back and the items are resolved again,
now against that profile (`MAX_ATTEMPTS` in all). New profiles are inserted in
identifier order, so requests creating the same ones wait for each other rather
than deadlock.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from envoi.automation.enqueue import watch_fields
from envoi.categories.models import Category
from envoi.core.errors import Conflict, Invalid
from envoi.core.fieldtypes import iso_utc
from envoi.core.identity import IDENTIFIERS, Identity
from envoi.db.lookup import is_db_id
from envoi.profiles import writing
from envoi.profiles.batching import chunks, custom_plans
from envoi.profiles.changes import (
    ItemError,
    ProfileChange,
    category_ids_of,
    errors_to_answer,
    read_change,
    validate_item,
)
from envoi.profiles.erasure import identifiers_of, lift_erasures
from envoi.profiles.fields import declared_types
from envoi.profiles.models import Profile
from envoi.profiles.schemas import UserIn

MAX_BULK_ITEMS = 10_000
# Attempts at writing a batch when concurrent requests keep inserting the same profiles.
MAX_ATTEMPTS = 3
# PostgreSQL's deadlock_detected and serialization_failure: worth another attempt.
_RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})

_REFUSED_AS_CONFLICT = {"conflict", "duplicate", "stale"}


def upsert_user(session: Session, project_id: int, item: UserIn) -> dict[str, Any]:
    """Create or update one profile; its echo, or Invalid (422) / Conflict (409)."""
    declared = declared_types(session, project_id)
    categories = _existing_categories(session, project_id, [item])
    try:
        change = read_change(item, ("body",), declared, categories)
    except ItemError as exc:
        raise _as_envoi_error(exc) from None
    error = apply_changes(session, project_id, [change])[0]
    if error is not None:
        raise _as_envoi_error(error)
    return change.answer()


def _as_envoi_error(error: ItemError) -> Conflict | Invalid:
    if error.type in _REFUSED_AS_CONFLICT:
        return Conflict(error.msg)
    return Invalid(error.msg, error.loc)


def upsert_users(
    session: Session, project_id: int, raw_items: Sequence[object]
) -> list[dict[str, Any]]:
    """Create or update many profiles; one answer per item, in order, `error` for a refused
    one. The refused items are not written, the others are."""
    if len(raw_items) > MAX_BULK_ITEMS:
        raise Invalid(f"at most {MAX_BULK_ITEMS} items per request", ("body",))
    custom_plans(session)  # many same-shaped lookups follow: see envoi.profiles.batching
    declared = declared_types(session, project_id)
    answers: list[dict[str, Any]] = []
    changes: list[ProfileChange] = []
    items: list[tuple[int, UserIn]] = []
    for position, raw in enumerate(raw_items):
        try:
            items.append((position, validate_item(raw, ("body", position))))
            answers.append({})
        except ItemError as exc:
            answers.append(errors_to_answer(raw, exc))
    categories = _existing_categories(session, project_id, [item for _, item in items])
    for position, item in items:
        try:
            changes.append(read_change(item, ("body", position), declared, categories))
        except ItemError as exc:
            answers[position] = errors_to_answer(raw_items[position], exc)
    for change, error in zip(changes, apply_changes(session, project_id, changes), strict=True):
        position = int(change.loc[1])
        answers[position] = change.answer() if error is None else errors_to_answer(None, error)
    return answers


def _existing_categories(session: Session, project_id: int, items: Sequence[UserIn]) -> set[int]:
    # An id beyond the INTEGER column names no category: not asked, so it is "not found".
    named = {category_id for category_id in category_ids_of(items) if is_db_id(category_id)}
    if not named:
        return set()
    query = select(Category.id).where(Category.project_id == project_id, Category.id.in_(named))
    return set(session.scalars(query))


def apply_changes(
    session: Session, project_id: int, changes: Sequence[ProfileChange]
) -> list[ItemError | None]:
    """Write the changes that can be applied; the error of each one that cannot.

    Each attempt runs in a SAVEPOINT, retried when a concurrent request won a race for
    the same identifiers (see the module doc); Conflict when the attempts run out.
    """
    attempt = 1
    while True:
        try:
            with session.begin_nested():
                return _apply(session, project_id, changes)
        except DBAPIError as exc:
            if not _lost_a_race(exc):
                raise
            if attempt == MAX_ATTEMPTS:
                raise Conflict("a concurrent request changed these profiles; retry") from None
            attempt += 1


def _sort_key(identity: Identity) -> tuple[str, ...]:
    return tuple(value or "" for value in (getattr(identity, name) for name in IDENTIFIERS))


def _lost_a_race(exc: DBAPIError) -> bool:
    if isinstance(exc, IntegrityError):
        return True  # a unique identifier taken by a concurrent insert or update
    return getattr(exc.orig, "sqlstate", None) in _RETRYABLE_SQLSTATES


def _apply(
    session: Session, project_id: int, changes: Sequence[ProfileChange]
) -> list[ItemError | None]:
    errors: list[ItemError | None] = [None] * len(changes)
    _refuse_duplicates(changes, errors)
    known = _lock_profiles(
        session, project_id, [c for c, e in zip(changes, errors, strict=True) if not e]
    )
    targets = _resolve(changes, errors, known)
    applied = [i for i, e in enumerate(errors) if e is None]
    updated = [(target, changes[i]) for i in applied if (target := targets[i]) is not None]
    # Inserted in identifier order: concurrent requests creating the same profiles then
    # meet on the first one (one waits, then retries) instead of deadlocking.
    new = sorted(
        (changes[i] for i in applied if targets[i] is None), key=lambda c: _sort_key(c.identity)
    )
    # Automated campaigns triggered by a field compare with the values before the write.
    watch = watch_fields(session, project_id, [profile for profile, _ in updated])
    for profile, change in updated:
        writing.update_profile(profile, change)
    session.flush()
    new_ids = writing.create_profiles(session, project_id, new)
    writing.write_subscriptions(
        session,
        [(profile.id, change) for profile, change in updated]
        + list(zip(new_ids, new, strict=True)),
    )
    watch.fire(session, updated, zip(new_ids, new, strict=True))
    lift_erasures(session, project_id, [changes[i].identity for i in applied])
    return errors


def _refuse_duplicates(changes: Sequence[ProfileChange], errors: list[ItemError | None]) -> None:
    items_by_identifier: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, change in enumerate(changes):
        for pair in change.identity.items():
            items_by_identifier[pair].append(i)
    for (name, value), positions in items_by_identifier.items():
        if len(positions) > 1:
            _mark_duplicates(changes, errors, positions, f"{name} {value}")


def _mark_duplicates(
    changes: Sequence[ProfileChange],
    errors: list[ItemError | None],
    positions: Sequence[int],
    what: str,
) -> None:
    where = ", ".join(str(changes[i].loc[-1]) for i in positions)
    for i in positions:
        errors[i] = ItemError(
            "duplicate",
            changes[i].loc,
            f"{what} is named by several items ({where}): merge them into one",
            changes[i].identity,
        )


def _lock_profiles(
    session: Session, project_id: int, changes: Sequence[ProfileChange]
) -> dict[tuple[str, str], Profile]:
    """Every existing profile the changes name, locked and read afresh, by each of its
    (identifier, value) pairs.

    First the ids: one query per chunk of items, matching any of their identifiers, so
    each profile is found once however many identifiers the items give. Then the rows,
    `SELECT ... FOR UPDATE` (PostgreSQL; nothing on SQLite) in id order across all
    chunks, so concurrent writers always lock in the same order and never deadlock on
    each other. The locked read returns the row as the last writer committed it, and
    `populate_existing` refreshes any copy the session loaded before.
    """
    ids: set[int] = set()
    for chunk in chunks(changes):
        wanted: dict[str, set[str]] = defaultdict(set)
        for change in chunk:
            for name, value in change.identity.items():
                wanted[name].add(value)
        named = or_(*(getattr(Profile, name).in_(sorted(v)) for name, v in wanted.items()))
        ids.update(
            session.scalars(select(Profile.id).where(Profile.project_id == project_id, named))
        )
    known: dict[tuple[str, str], Profile] = {}
    for id_chunk in chunks(sorted(ids)):
        query = (
            select(Profile)
            .where(Profile.project_id == project_id, Profile.id.in_(id_chunk))
            .order_by(Profile.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        for profile in session.scalars(query):
            known.update(dict.fromkeys(identifiers_of(profile), profile))
    return known


def _resolve(
    changes: Sequence[ProfileChange],
    errors: list[ItemError | None],
    known: dict[tuple[str, str], Profile],
) -> list[Profile | None]:
    """The existing profile of each change (None: a new one), refusing the unresolvable."""
    targets: list[Profile | None] = [None] * len(changes)
    claimed: dict[int, list[int]] = defaultdict(list)
    for i, change in enumerate(changes):
        if errors[i] is not None:
            continue
        found = {p.id: p for pair in change.identity.items() if (p := known.get(pair))}
        if len(found) > 1:
            errors[i] = _conflict(change, sorted(found))
            continue
        if found:
            target = next(iter(found.values()))
            errors[i] = _stale(change, target)
            targets[i] = target
            claimed[target.id].append(i)
    for profile_id, positions in claimed.items():
        # Different identifiers of one existing profile, in several items.
        if len(positions) > 1:
            _mark_duplicates(changes, errors, positions, f"profile {profile_id}")
    return targets


def _conflict(change: ProfileChange, profile_ids: list[int]) -> ItemError:
    names = ", ".join(f"{n}={v}" for n, v in change.identity.items())
    ids = ", ".join(map(str, profile_ids))
    msg = f"{names} name different profiles ({ids})"
    return ItemError("conflict", change.loc, msg, change.identity)


def _stale(change: ProfileChange, target: Profile) -> ItemError | None:
    stored = target.last_updated_at
    if change.updated_at is None or stored is None or change.updated_at >= stored:
        return None
    return ItemError(
        "stale",
        change.loc,
        f"update_profile_last_updated_at {iso_utc(change.updated_at)} is older than"
        f" the profile's {iso_utc(stored)}: the update was not applied",
        change.identity,
    )
