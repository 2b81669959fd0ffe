"""Delivery rules on the OLTP store: DKIM keys of a project's sending domains, and the
compiled message of an email for a campaign.

A DKIM key is made inactive: it signs nothing until it is activated, once its DNS
record resolves (`activate_dkim_key`, `envoi dkim activate`), because a signature
whose key a receiver cannot fetch fails DKIM, hence DMARC, for every message sent
meanwhile (docs/dkim.md)."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime

import dns.exception
import dns.rdtypes.ANY.TXT
import dns.resolver
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from envoi.core.errors import Conflict, Invalid, NotFound
from envoi.core.tokens import MessageLinks
from envoi.db.lookup import get_owned, is_db_id
from envoi.delivery.dkim import ALGORITHMS, DkimSigner, dns_record, generate_key, record_problem
from envoi.delivery.models import DkimKey
from envoi.delivery.render import CompiledMessage, MessageContext, choose_content, compile_message
from envoi.emails.models import Email
from envoi.projects.models import Project

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DOMAIN = re.compile(rf"(?:{_LABEL}\.)+{_LABEL}")
_SELECTOR = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
DOMAIN_MAX = 253
SELECTOR_MAX = 63  # DkimKey.selector
DNS_LIFETIME = 10.0  # seconds a TXT lookup may take, retries included
# A DNS name -> the TXT records there, each record's strings joined ([] for none).
TxtLookup = Callable[[str], list[str]]


def normalise_domain(domain: str) -> str:
    """A sending domain as DKIM's d= tag names it: lower case, IDNA (xn--) form, no
    trailing dot. Raises Invalid for anything that is not a host name."""
    text = domain.strip().rstrip(".").lower()
    try:
        ascii_domain = text.encode("idna").decode("ascii") if not text.isascii() else text
    except UnicodeError:
        ascii_domain = ""
    if len(ascii_domain) > DOMAIN_MAX or not _DOMAIN.fullmatch(ascii_domain):
        raise Invalid(f"{domain!r} is not a domain name", loc=("domain",))
    return ascii_domain


def default_selector(now: datetime | None = None) -> str:
    """`envoiYYYYMM`: a new selector each month makes key rotation a matter of course."""
    return f"envoi{(now or datetime.now(UTC)):%Y%m}"


def create_dkim_key(
    session: Session,
    project_id: int,
    domain: str,
    selector: str,
    algorithm: str,
    *,
    active: bool = False,
) -> tuple[DkimKey, str]:
    """Generate and store a key pair for `domain` under `selector`; return the row and
    the DNS TXT value to publish at `selector._domainkey.domain`. `algorithm` is "rsa"
    (2048 bits) or "ed25519" (the `-sha256` names are accepted too). The key signs
    only once activated (`activate_dkim_key`); `active=True` makes it sign at once,
    without a DNS check, beside the domain's other active keys (tests, benchmarks)."""
    name = normalise_domain(domain)
    chosen = selector.strip().lower()
    if len(chosen) > SELECTOR_MAX or not _SELECTOR.fullmatch(chosen):
        raise Invalid(f"{selector!r} is not a DKIM selector", loc=("selector",))
    short = algorithm.strip().lower().removesuffix("-sha256")
    if short not in ALGORITHMS:
        raise Invalid(f"algorithm must be one of {', '.join(ALGORITHMS)}", loc=("algorithm",))
    if not is_db_id(project_id) or session.get(Project, project_id) is None:
        raise NotFound(f"project {project_id} not found")
    pem, txt = generate_key(short)
    key = DkimKey(
        project_id=project_id,
        domain=name,
        selector=chosen,
        algorithm=ALGORITHMS[short],
        private_key=pem,
        active=active,
    )
    try:
        # The unique (project, domain, selector) decides, in a SAVEPOINT: no
        # check-then-insert race with a concurrent generate.
        with session.begin_nested():
            session.add(key)
            session.flush()
    except IntegrityError:
        raise Conflict(f"selector {chosen!r} already exists for {name}") from None
    return key, txt


def list_dkim_keys(session: Session, project_id: int | None = None) -> list[DkimKey]:
    query = select(DkimKey).order_by(DkimKey.project_id, DkimKey.domain, DkimKey.id)
    if project_id is not None:
        query = query.where(DkimKey.project_id == project_id)
    return list(session.scalars(query))


def txt_value(key: DkimKey) -> str:
    """The DNS TXT value of a stored key (derived from its private half)."""
    return dns_record(key.private_key)


def record_name(key: DkimKey) -> str:
    """Where the key's TXT record is published."""
    return f"{key.selector}._domainkey.{key.domain}"


def lookup_txt(name: str) -> list[str]:
    """The TXT records at `name` from the system's resolver, each record's strings
    joined; [] when the name or the record does not exist. Invalid when DNS gives no
    answer (a timeout, a failing server)."""
    try:
        answer = dns.resolver.resolve(name, "TXT", lifetime=DNS_LIFETIME)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    except dns.exception.DNSException as exc:
        raise Invalid(f"DNS lookup of {name} failed: {exc}", loc=("dns",)) from None
    return [
        b"".join(record.strings).decode("ascii", "replace")
        for record in answer
        if isinstance(record, dns.rdtypes.ANY.TXT.TXT)
    ]


def activate_dkim_key(
    session: Session, key_id: int, *, lookup: TxtLookup | None, project_id: int | None = None
) -> DkimKey:
    """Make key `key_id` the one that signs its domain's mail (the domain's other keys
    of the project stop signing; their records should stay published a few days for
    mail already signed). With `lookup`, its TXT record must be published first:
    Invalid (loc `dns`) when what `lookup` finds there does not publish this key.
    `lookup` None skips the check. NotFound for no such key (in `project_id`)."""
    key = _owned_key(session, key_id, project_id)
    if lookup is not None:
        name = record_name(key)
        problem = record_problem(lookup(name), txt_value(key))
        if problem is not None:
            raise Invalid(f"{name}: {problem}", loc=("dns",))
    session.execute(
        update(DkimKey)
        .where(
            DkimKey.project_id == key.project_id,
            DkimKey.domain == key.domain,
            DkimKey.id != key.id,
            DkimKey.active,
        )
        .values(active=False)
        .execution_options(synchronize_session="fetch")
    )
    key.active = True
    session.flush()
    return key


def deactivate_dkim_key(session: Session, key_id: int, *, project_id: int | None = None) -> DkimKey:
    """Stop key `key_id` signing (its domain's mail goes unsigned unless another key of
    the domain is active). NotFound for no such key (in `project_id`)."""
    key = _owned_key(session, key_id, project_id)
    key.active = False
    session.flush()
    return key


def _owned_key(session: Session, key_id: int, project_id: int | None) -> DkimKey:
    key = session.get(DkimKey, key_id) if is_db_id(key_id) else None
    if key is None or (project_id is not None and key.project_id != project_id):
        raise NotFound(f"DKIM key {key_id} not found")
    return key


def dkim_signer(session: Session, project_id: int, domain: str) -> DkimSigner | None:
    """The signer of the newest active key of `domain` (a From domain), or None."""
    try:
        name = normalise_domain(domain)
    except Invalid:
        return None
    query = (
        select(DkimKey)
        .where(DkimKey.project_id == project_id, DkimKey.domain == name, DkimKey.active)
        .order_by(DkimKey.created_at.desc(), DkimKey.id.desc())
        .limit(1)
    )
    key = session.scalars(query).first()
    if key is None:
        return None
    return DkimSigner(key.domain, key.selector, key.private_key)


def compile_for(
    session: Session,
    email_id: int,
    language: str | None,
    context: MessageContext,
    links: MessageLinks,
) -> CompiledMessage:
    """The email `email_id` of `context.project_id`, compiled in the variant for
    `language` (see `choose_content`). NotFound when the project has no such email."""
    email = get_owned(
        session,
        Email,
        context.project_id,
        email_id,
        "email",
        options=(selectinload(Email.contents),),
    )
    return compile_message(email, choose_content(email, language), context, links)
