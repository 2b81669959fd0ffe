"""Seed 000's route: `POST /api/3.0/statistics/spooler/{spooler_token}` with
`{"groupBy": ...}`, thin over `statistics.spoolers`.

Every error has one shape, `{"error": {"code": STATUS, "message": "..."}}`, checked in
this order: an unknown token (404), a client outside the project's allowlist (403), a
bad body (400), no event store (503).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from envoi.core.errors import Invalid
from envoi.statistics.query import UNAVAILABLE, StatisticsEngine
from envoi.statistics.spoolers import find_spooler, parse_grouping, spooler_stats

router = APIRouter(tags=["statistics (seed 000)"])

UNKNOWN_SPOOLER = "Unknown spooler token"
NOT_ALLOWED = "API client IP not allowed"


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": status, "message": message}}, status_code=status)


@router.post("/api/3.0/statistics/spooler/{spooler_token}", response_model=None)
async def spooler_statistics(spooler_token: str, request: Request) -> JSONResponse:
    """The spooler's activity, routing and spooling counters, grouped as asked."""
    body = await request.body()
    client_host = request.client.host if request.client else None
    # The OLTP and event store reads block: off the event loop.
    return await run_in_threadpool(_answer, request, spooler_token, body, client_host)


def _answer(request: Request, token: str, body: bytes, client_host: str | None) -> JSONResponse:
    spooler = find_spooler(request.app.state.sessionmaker, token)
    if spooler is None:
        return error(404, UNKNOWN_SPOOLER)
    if not spooler.allows(client_host):
        return error(403, NOT_ALLOWED)
    try:
        grouping = parse_grouping(body)
    except Invalid as invalid:
        return error(400, invalid.message)
    store = request.app.state.event_store
    if store is None:
        return error(503, UNAVAILABLE)
    answer: dict[str, Any] = spooler_stats(StatisticsEngine(store), spooler, grouping)
    return JSONResponse(answer)
