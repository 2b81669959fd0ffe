"""From claimed spool rows to bytes on a transport: what the sender needs, cached.

A claimed batch is loaded in one database unit of work (`load_batch`, on the
worker's database thread): the claims, their profiles in one query, and whatever the
caches miss: each campaign's context, each (campaign, email, language)'s compiled
message, each project's routing table (kept a few seconds, so a rule edited through
the API takes effect quickly), each (project, From domain)'s DKIM signer. The caches
are written only on the event loop (`install`); the database thread merely reads
which keys they hold, so at worst a key is loaded twice.

`build` then turns one row into its message on the event loop: personalise the
compiled message, sign it, pick the router. That is the per-message CPU work, kept
free of I/O.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from envoi.campaigns.models import Campaign
from envoi.core.errors import EnvoiError
from envoi.core.tokens import MessageLinks
from envoi.delivery import services as delivery
from envoi.delivery.dkim import DkimSigner
from envoi.delivery.interfaces import Envelope, SmtpReply, Transport
from envoi.delivery.render import CompiledMessage, MessageContext, Recipient
from envoi.profiles.models import Profile
from envoi.projects.models import Project
from envoi.routers.routing import RouterSpec, RoutingTable, make_transport
from envoi.sends.streams import CHOSEN_PROFILE, TEST, tracking_of
from envoi.spool import services as spool
from envoi.spool.hooks import HookConfig, hook_config
from envoi.spool.services import Claim, Result

log = logging.getLogger("envoi.delivery")

ROUTING_TTL_SECONDS = 5.0  # a routing rule edited through the API applies this soon
SIGNER_TTL_SECONDS = 60.0  # a new DKIM key signs this soon
# Entries kept; one evicted while a row of it waits in the queue sends that row back.
COMPILED_CACHE_SIZE = 512  # (campaign, email, language) triples kept compiled
CAMPAIGN_CACHE_SIZE = 4096
# Message type of spool rows outside campaigns (none are written: single sends have
# stream campaigns, `sends.streams`).
DEFAULT_MESSAGE_TYPE = "L"

CompiledKey = tuple[int | None, int, str | None]  # campaign, email, profile language


@dataclass(frozen=True)
class CampaignInfo:
    """What every message of one campaign shares."""

    context: MessageContext
    hook: HookConfig | None
    state: str
    # A test send's row names no profile: the profile whose data its template shows
    # is in its parameters (`sends.streams.CHOSEN_PROFILE`).
    chosen_profile: bool = False


@dataclass(frozen=True)
class Job:
    """A claimed row with its profile, waiting in the worker for a sending lane."""

    claim: Claim
    profile: dict[str, Any]
    claimed_at: float  # time.monotonic() of the claim: its lease runs from here


@dataclass
class Loaded:
    """One batch read on the database thread, to merge into the caches on the loop."""

    jobs: list[Job] = field(default_factory=list)
    campaigns: dict[int | None, CampaignInfo] = field(default_factory=dict)
    compiled: dict[CompiledKey, CompiledMessage | Exception] = field(default_factory=dict)
    signers: dict[tuple[int, str], DkimSigner | None] = field(default_factory=dict)
    tables: dict[int, RoutingTable] = field(default_factory=dict)


@dataclass(frozen=True)
class Outgoing:
    """A message ready for its transport."""

    envelope: Envelope
    data: bytes
    transport: Transport
    router: str
    language: str


class _Lru(OrderedDict[Any, Any]):
    def __init__(self, size: int) -> None:
        super().__init__()
        self._size = size

    def put(self, key: Any, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self._size:
            self.popitem(last=False)


def _expired(stamps: Mapping[Any, float], key: Any, now: float) -> bool:
    return stamps.get(key, 0.0) <= now


def synthetic_failure(text: str) -> SmtpReply:
    """A permanent failure found before SMTP (no message can be made for the row)."""
    return SmtpReply(554, "5.6.0", f"envoi: {text}"[:1000])


class MessageFactory:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        links: MessageLinks,
        *,
        default_router: str,
        bounce_domain: str,
        trusted_hosts: tuple[str, ...] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions = sessions
        self._links = links
        self._default_router = default_router
        self._bounce_domain = bounce_domain
        self._trusted_hosts = trusted_hosts
        self._monotonic = clock
        self.campaigns: _Lru = _Lru(CAMPAIGN_CACHE_SIZE)
        self._compiled: _Lru = _Lru(COMPILED_CACHE_SIZE)
        self._signers: dict[tuple[int, str], DkimSigner | None] = {}
        self._signer_until: dict[tuple[int, str], float] = {}
        self._tables: dict[int, RoutingTable] = {}
        self._table_until: dict[int, float] = {}
        self._transports: dict[str, Transport] = {}
        self._spec_keys: dict[int, tuple[RouterSpec, str]] = {}

    # -- database thread --------------------------------------------------------------

    def load_batch(
        self, session: Session, owner: str, now: datetime, limit: int, lease_seconds: float
    ) -> Loaded:
        """Claim up to `limit` due rows and read what building their messages needs."""
        claims = spool.claim(session, owner, now, limit, lease_seconds)
        loaded = Loaded()
        if not claims:
            return loaded
        claimed_at = self._monotonic()
        self._load_campaigns(session, claims, loaded)
        shown = {c.id: _shown_profile(c, loaded.campaigns[c.campaign_id]) for c in claims}
        profiles = _profiles(session, {i for i in shown.values() if i})
        loaded.jobs = [Job(c, profiles.get(shown[c.id] or 0, {}), claimed_at) for c in claims]
        self._load_compiled(session, loaded)
        self._load_tables(session, claims, loaded)
        return loaded

    def _load_campaigns(self, session: Session, claims: list[Claim], loaded: Loaded) -> None:
        wanted = {c.campaign_id: c.project_id for c in claims}
        states = spool.campaign_states(session, [i for i in wanted if i is not None])
        for campaign_id, project_id in wanted.items():
            cached: CampaignInfo | None = self.campaigns.get(campaign_id)
            state = states.get(campaign_id, "running") if campaign_id is not None else "running"
            if cached is not None:
                loaded.campaigns[campaign_id] = replace(cached, state=state)
                continue
            loaded.campaigns[campaign_id] = _campaign_info(
                session, project_id, campaign_id, state, self._bounce_domain
            )

    def _load_compiled(self, session: Session, loaded: Loaded) -> None:
        """Compile what the cache misses; then the DKIM signers of the From domains, each
        read again once its entry is older than SIGNER_TTL_SECONDS (a new key signs)."""
        now = self._monotonic()
        for job in loaded.jobs:
            key = compiled_key(job)
            compiled = loaded.compiled.get(key) or self._compiled.get(key)
            if compiled is None:
                compiled = self._compile(session, job, key, loaded)
            if not isinstance(compiled, CompiledMessage):
                continue
            signer_key = (job.claim.project_id, compiled.from_domain)
            if signer_key not in loaded.signers and _expired(self._signer_until, signer_key, now):
                loaded.signers[signer_key] = delivery.dkim_signer(session, *signer_key)

    def _compile(
        self, session: Session, job: Job, key: CompiledKey, loaded: Loaded
    ) -> CompiledMessage | Exception | None:
        context = loaded.campaigns[job.claim.campaign_id].context
        try:
            compiled = delivery.compile_for(
                session, job.claim.email_id, key[2], context, self._links
            )
        except EnvoiError as exc:
            # The email is gone or its template does not compile: every row of this
            # email and language fails the same way, so the failure is kept and said once.
            log.warning(
                "message cannot be compiled",
                extra={"campaign_id": key[0], "email_id": key[1], "error": str(exc)},
            )
            loaded.compiled[key] = exc
            return exc
        except Exception:
            # Anything else may pass (a database hiccup): its rows go back and are tried
            # again with the next claim.
            log.exception("compiling a message failed", extra={"email_id": key[1]})
            return None
        loaded.compiled[key] = compiled
        return compiled

    def _load_tables(self, session: Session, claims: list[Claim], loaded: Loaded) -> None:
        now = self._monotonic()
        for project_id in {c.project_id for c in claims}:
            if _expired(self._table_until, project_id, now):
                loaded.tables[project_id] = RoutingTable.load(
                    session, project_id, self._default_router
                )

    # -- event loop -------------------------------------------------------------------

    def install(self, loaded: Loaded) -> None:
        now = self._monotonic()
        for campaign_id, info in loaded.campaigns.items():
            self.campaigns.put(campaign_id, info)
        for key, compiled in loaded.compiled.items():
            self._compiled.put(key, compiled)
        for signer_key, signer in loaded.signers.items():
            self._signers[signer_key] = signer
            self._signer_until[signer_key] = now + SIGNER_TTL_SECONDS
        if loaded.tables:
            self._spec_keys.clear()  # old tables' specs: let them go
        for project_id, table in loaded.tables.items():
            self._tables[project_id] = table
            self._table_until[project_id] = now + ROUTING_TTL_SECONDS

    def set_state(self, campaign_id: int, state: str) -> None:
        cached: CampaignInfo | None = self.campaigns.get(campaign_id)
        if cached is not None:
            self.campaigns.put(campaign_id, replace(cached, state=state))

    def campaign(self, job: Job) -> CampaignInfo:
        """KeyError if evicted since the claim: the lane sends the row back."""
        info: CampaignInfo = self.campaigns[job.claim.campaign_id]
        return info

    def build(self, job: Job, params: dict[str, Any]) -> Outgoing | Result | None:
        """Render, sign and route one row; a Result when no message can be made for it;
        None when it cannot be made now (its compiled message is not in the cache:
        the row goes back and is claimed again)."""
        claim = job.claim
        compiled = self._compiled.get(compiled_key(job))
        if compiled is None:
            return None
        if isinstance(compiled, Exception):
            reply = synthetic_failure(f"message not compiled: {compiled}")
            return Result(claim.id, reply, params=params or None)
        context = self.campaign(job).context
        return_path = self._links.return_path(claim.id, context.bounce_domain)
        recipient = Recipient(claim.id, claim.recipient, job.profile, params)
        try:
            data = compiled.render(recipient)
        except Exception as exc:  # RenderError: the templates failed on this row's data
            log.warning(
                "message could not be rendered",
                extra={"spool_id": claim.id, "error": f"{type(exc).__name__}: {exc}"},
            )
            reply = synthetic_failure(f"message not rendered: {type(exc).__name__}: {exc}")
            return Result(claim.id, reply, language=compiled.language, params=params or None)
        signer = self._signers.get((claim.project_id, compiled.from_domain))
        if signer is not None:
            data = signer.sign(data)
        spec = self._tables[claim.project_id].choose(
            claim.campaign_id, context.message_type, claim.domain
        )
        envelope = Envelope(
            mail_from=return_path,
            recipient=claim.recipient,
            domain=claim.domain,
            spool_id=claim.id,
            post=context.post,
            project_id=claim.project_id,
        )
        try:
            transport = self.transport(spec)
        except Exception as exc:  # a router whose settings no longer build a transport
            log.exception("router unusable", extra={"router": spec.name, "spool_id": claim.id})
            reply = SmtpReply(0, None, f"envoi: router {spec.name} unusable: {exc}"[:1000])
            return Result(claim.id, reply, spec.name, compiled.language, None, params or None)
        return Outgoing(envelope, data, transport, spec.name, compiled.language)

    def transport(self, spec: RouterSpec) -> Transport:
        """One transport per router definition: a router edited since gets a new one."""
        # Specs are unhashable (their config is a dict) and new objects at each table
        # load: remember each object's definition key, not to serialise it per message.
        known = self._spec_keys.get(id(spec))
        if known is None or known[0] is not spec:
            definition = [spec.id, spec.name, spec.kind, spec.config]
            known = (spec, json.dumps(definition, sort_keys=True, default=str))
            self._spec_keys[id(spec)] = known
        transport = self._transports.get(known[1])
        if transport is None:
            transport = make_transport(spec, self._sessions, trusted_hosts=self._trusted_hosts)
            self._transports[known[1]] = transport
        return transport

    async def close(self) -> None:
        transports, self._transports = list(self._transports.values()), {}
        for transport in transports:
            try:
                await transport.close()
            except Exception:
                log.exception("closing a transport failed")


def _shown_profile(claim: Claim, info: CampaignInfo) -> int | None:
    """The profile whose data the row's template shows: its own, or for a test send
    the one chosen (read when sent, so an erased profile shows nothing)."""
    if not info.chosen_profile:
        return claim.profile_id
    chosen = claim.params.get(CHOSEN_PROFILE)
    return chosen if isinstance(chosen, int) and not isinstance(chosen, bool) else None


def compiled_key(job: Job) -> CompiledKey:
    language = job.profile.get("language") or job.claim.language
    return (job.claim.campaign_id, job.claim.email_id, language or None)


def _profiles(session: Session, ids: set[int]) -> dict[int, dict[str, Any]]:
    """uid, email, phone, language and the declared fields of each profile, in one query."""
    if not ids:
        return {}
    rows = session.execute(
        select(
            Profile.id, Profile.uid, Profile.email, Profile.phone, Profile.language, Profile.fields
        ).where(Profile.id.in_(ids))
    )
    return {
        row.id: {
            **(row.fields or {}),
            "uid": row.uid,
            "email": row.email,
            "phone": row.phone,
            "language": row.language,
        }
        for row in rows
    }


def _campaign_info(
    session: Session, project_id: int, campaign_id: int | None, state: str, bounce_domain: str
) -> CampaignInfo:
    project = session.get(Project, project_id)
    if project is None:  # deleted with its spool rows: nothing will use this
        raise LookupError(f"project {project_id} is gone")
    bounce_domain = project.bounce_domain or bounce_domain
    campaign = session.get(Campaign, campaign_id) if campaign_id is not None else None
    if campaign is None:
        context = MessageContext(project_id, None, None, DEFAULT_MESSAGE_TYPE, (), bounce_domain)
        return CampaignInfo(context, None, state)
    tags = tuple(t.strip() for t in (campaign.tags or "").split(",") if t.strip())
    # The stream campaigns of single sends carry their tracking switches (`sends`).
    tracking = tracking_of(campaign.post_type, campaign.config)
    context = MessageContext(
        project_id,
        campaign.id,
        campaign.post,
        campaign.message_type,
        tags,
        bounce_domain,
        track_opens=tracking.opens,
        track_clicks=tracking.clicks,
    )
    hook = hook_config(campaign.config, project.api_key_hash)
    return CampaignInfo(context, hook, state, chosen_profile=campaign.post_type == TEST)
