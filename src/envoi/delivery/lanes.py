"""The sending half of a delivery worker: lanes that turn claimed rows into SMTP
transactions, one at a time each.

A lane takes a claimed row from the queue, asks the campaign's pre-send hook when it
has one, renders and signs the message, and then, in one group commit, records its
previous answer and marks this row `sending`. Only once that commit is durable does
the message go to the router's transport. So a lane holds at most one row in
`sending`, and a worker at most as many as it has lanes: after a kill -9 those are
the only rows whose recipient may get the message twice (`uncertain`).

A row whose campaign was paused or archived, or that waited too long in the queue
(its lease could be taken over), is handed back instead of sent.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
from prometheus_client import Counter as MetricCounter

from envoi.config import Settings
from envoi.delivery.commits import GroupCommit
from envoi.delivery.interfaces import SmtpReply
from envoi.delivery.metrics import DeliveryMetrics
from envoi.delivery.preparing import Job, MessageFactory, Outgoing
from envoi.spool import hooks
from envoi.spool.services import Result

log = logging.getLogger("envoi.delivery")

SENDABLE_STATES = frozenset({"running"})
# A claimed row waits in the worker at most this share of its lease before it is
# handed back instead of sent: past its lease another worker may have taken it.
MAX_WAIT_SHARE_OF_LEASE = 0.5
HOOK_CLIENT_TIMEOUT_SECONDS = 10.0  # each hook call has its own, shorter, limit


class Lanes:
    def __init__(
        self,
        settings: Settings,
        *,
        owner: str,
        factory: MessageFactory,
        commits: GroupCommit,
        metrics: DeliveryMetrics,
        counts: Counter[str],
        running_low: Callable[[], None],
    ) -> None:
        """`running_low` is called when the queue falls under half a claim batch."""
        self.queue: asyncio.Queue[Job | None] = asyncio.Queue()
        self.busy = 0  # lanes working on a row
        self.sending: set[int] = set()  # rows this worker holds in state `sending`
        self._settings = settings
        self._owner = owner
        self._factory = factory
        self._commits = commits
        self._metrics = metrics
        self._counts = counts
        self._running_low = running_low
        self._low_water = settings.worker_batch // 2
        self._tasks: list[asyncio.Task[None]] = []
        self._hook_client: httpx.AsyncClient | None = None
        self._post_hooks: set[asyncio.Task[None]] = set()
        # Metric children by outcome (`labels()` takes a lock and builds a key each time),
        # and the in-flight gauge's last value (a steady lane leaves it unchanged).
        self._outcomes: dict[str, MetricCounter] = {}
        self._in_flight = 0

    def start(self, count: int) -> None:
        self._tasks = [asyncio.create_task(self._lane()) for _ in range(count)]

    async def stop(self) -> None:
        """Hand the queued rows back, let each lane finish its row and record it."""
        self.release(self.drain())
        for _ in self._tasks:
            self.queue.put_nowait(None)
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*self._post_hooks, return_exceptions=True)
        if self._hook_client is not None:
            await self._hook_client.aclose()

    # -- the queue ----------------------------------------------------------------------

    def put(self, jobs: list[Job]) -> None:
        for job in jobs:
            self.queue.put_nowait(job)
        self._metrics.queued.set(self.queue.qsize())

    def held(self) -> list[Job]:
        """The rows waiting in the queue (a snapshot)."""
        # asyncio.Queue has no public snapshot; its deque is stable between awaits.
        queued: list[Job | None] = list(self.queue._queue)  # type: ignore[attr-defined]
        return [job for job in queued if job is not None]

    def drain(self) -> list[Job]:
        jobs: list[Job] = []
        while not self.queue.empty():
            job = self.queue.get_nowait()
            if job is not None:
                jobs.append(job)
        return jobs

    def drop_unsendable(self) -> None:
        """Hand back the queued rows of campaigns that are no longer running."""
        held = self.drain()
        self.release([job for job in held if not self.sendable(job)])
        self.put([job for job in held if self.sendable(job)])

    def release(self, jobs: list[Job]) -> None:
        if not jobs:
            return
        self._metrics.released.inc(len(jobs))
        future = self._commits.submit(releases=[job.claim.id for job in jobs])
        # Fire and forget: a failure is logged by the group commit, and the rows come
        # back anyway when their lease expires.
        future.add_done_callback(lambda f: f.cancelled() or f.exception())

    def sendable(self, job: Job) -> bool:
        return self._factory.campaign(job).state in SENDABLE_STATES

    # -- a lane -------------------------------------------------------------------------

    async def _lane(self) -> None:
        carry: list[Result] = []  # the last send's result, recorded with the next mark
        while True:
            job = self._take_nowait()
            if job is None:
                if carry:
                    await self._commit(results=carry)
                    carry = []
                job = await self.queue.get()
                if job is None:
                    return
            self.busy += 1
            try:
                carry = await self._send_one(job, carry)
            except Exception:
                # Before its SMTP transaction (a bug, or the database gone for good): the
                # row goes back; the results carried are tried again with the next commit.
                log.exception("delivery lane failed", extra={"spool_id": job.claim.id})
                self.release([job])
            finally:
                self.busy -= 1

    def _take_nowait(self) -> Job | None:
        try:
            job = self.queue.get_nowait()
        except asyncio.QueueEmpty:
            return None
        if job is None:  # a stop sentinel: leave it for the blocking get
            self.queue.put_nowait(None)
            return None
        if self.queue.qsize() < self._low_water:
            self._running_low()
        return job

    async def _send_one(self, job: Job, carry: list[Result]) -> list[Result]:
        """Send one row; returns the results not yet recorded (the lane's next carry)."""
        if not self.sendable(job) or self._too_old(job):
            self.release([job])
            return carry
        params = dict(job.claim.params)
        refused = await self._pre_send(job, params)
        if refused is not None:
            return [*carry, refused]
        outgoing = self._factory.build(job, params)
        if isinstance(outgoing, Result):
            self._count(outgoing)
            return [*carry, outgoing]
        if outgoing is None or not self.sendable(job):  # not ready; or paused meanwhile
            self.release([job])
            return carry
        if not await self._commit(results=carry, mark=job.claim.id):
            log.warning(
                "row not sent: its lease expired before it was handed to SMTP",
                extra={"spool_id": job.claim.id, "owner": self._owner},
            )
            return []
        reply = await self._transmit(outgoing)
        # The parameters the hook added (keys the claim lacks: the same size means none).
        hook_params = (
            {k: v for k, v in params.items() if k not in job.claim.params}
            if len(params) != len(job.claim.params)
            else None
        )
        result = Result(
            job.claim.id, reply, outgoing.router, outgoing.language, None, hook_params or None
        )
        self._count(result)
        self._post_send(job, result)
        return [result]

    async def _commit(self, *, results: list[Result], mark: int | None = None) -> bool:
        """Durably record `results` and put `mark` in `sending`, in one group commit;
        False when `mark` could not be (its lease was lost: it must not be sent)."""
        marked = await self._commits.submit(results=results, mark=mark)
        for result in results:
            self.sending.discard(result.spool_id)
        if mark is not None and marked:
            self.sending.add(mark)
        if len(self.sending) != self._in_flight:
            self._in_flight = len(self.sending)
            self._metrics.in_flight.set(self._in_flight)
        return marked

    def _too_old(self, job: Job) -> bool:
        age = time.monotonic() - job.claimed_at
        return age > self._settings.worker_lease_seconds * MAX_WAIT_SHARE_OF_LEASE

    async def _transmit(self, outgoing: Outgoing) -> SmtpReply:
        began = time.perf_counter()
        try:
            return await outgoing.transport.send(outgoing.envelope, outgoing.data)
        except Exception as exc:  # a transport must not raise; if it does, retry later
            log.exception("transport raised", extra={"router": outgoing.router})
            return SmtpReply(0, None, f"envoi: transport error: {type(exc).__name__}: {exc}")
        finally:
            self._metrics.smtp_seconds.observe(time.perf_counter() - began)

    def _count(self, result: Result) -> None:
        outcome = "skipped" if result.reply is None else result.reply.outcome
        self._counts[outcome] += 1
        counter = self._outcomes.get(outcome)
        if counter is None:
            counter = self._outcomes[outcome] = self._metrics.messages.labels(outcome)
        counter.inc()

    # -- the campaign's hook ------------------------------------------------------------

    def _client(self) -> httpx.AsyncClient:
        if self._hook_client is None:
            self._hook_client = httpx.AsyncClient(timeout=HOOK_CLIENT_TIMEOUT_SECONDS)
        return self._hook_client

    async def _pre_send(self, job: Job, params: dict[str, Any]) -> Result | None:
        """Ask the campaign's pre-send hook; a refusal is the row's result (skipped as
        `external_check`), an acceptance may add template parameters to `params`."""
        hook = self._factory.campaign(job).hook
        if hook is None:
            return None
        verdict = await hooks.pre_send(self._client(), hook, self._hook_payload(job))
        if verdict.allowed:
            params.update(verdict.params)
            return None
        result = Result(
            job.claim.id, None, skip_reason="external_check", params=verdict.params or None
        )
        self._count(result)
        return result

    def _post_send(self, job: Job, result: Result) -> None:
        """Report the result to the hook (`hook_pre_post`), off the lane: its answer
        changes nothing."""
        hook = self._factory.campaign(job).hook
        if hook is None or not hook.pre_post:
            return
        reply = result.reply
        payload = self._hook_payload(job, result.params) | {
            "result": "skipped" if reply is None else reply.outcome,
            "smtp_code": None if reply is None else reply.code,
        }
        task = asyncio.create_task(hooks.post_send(self._client(), hook, payload))
        self._post_hooks.add(task)
        task.add_done_callback(self._post_hooks.discard)

    def _hook_payload(self, job: Job, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        claim = job.claim
        return hooks.make_payload(
            post=self._factory.campaign(job).context.post,
            message_id=claim.email_id,
            send_id=claim.id,
            email=claim.recipient,
            uid=job.profile.get("uid"),
            profile=job.profile,
            params={**claim.params, **(extra or {})},
        )
