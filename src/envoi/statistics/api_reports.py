"""Seed 002's report builder: `GET /api/v1/stats?fields=...&FIELD=op:value...`.

Basic login:secret with the project's IP allowlist, or the web UI's session cookie
(`SessionOrProject`; its failures keep the native API's `{"detail": ...}`). The query
string is mapped by `reports`; answers, errors included, have the seed's shape
`{"metadata": {"ready": true}, "result": ..., "error": ...}`.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from envoi.statistics.query import UNAVAILABLE, StatisticsEngine
from envoi.statistics.reports import ReportError, parse_report, run_report
from envoi.web.deps import SessionOrProject

router = APIRouter(tags=["statistics (seed 002)"])

TRUNCATED_HEADER = "X-Envoi-Truncated"  # "true" when more groups matched than shown


def _answer(result: list[dict[str, Any]] | None, error: str | None, status: int) -> JSONResponse:
    body = {"metadata": {"ready": True}, "result": result, "error": error}
    return JSONResponse(body, status_code=status)


@router.get("/stats", response_model=None)
def report(
    request: Request,
    project: SessionOrProject,
    fields: Annotated[
        str | None,
        Query(description="grouping and aggregated fields, comma-separated (required)"),
    ] = None,
    timezone: Annotated[
        str | None, Query(description="IANA time zone of the time fields (default UTC)")
    ] = None,
) -> JSONResponse:
    """Seed 002's report: the requested fields per group, then the totals. Any grouping
    field is also a filter parameter: `date=ge:2021-01-27`, `post=in:S_1,S_2`.

    A sync route: FastAPI runs it (and the event store's read) off the event loop.
    `fields` and `timezone` are declared for the schema; every parameter, repeated
    ones included, is read from the query string itself.
    """
    del fields, timezone
    try:
        parsed = parse_report(request.query_params.multi_items(), project.id)
        store = request.app.state.event_store
        if store is None:
            return _answer(None, UNAVAILABLE, 503)
        answer = run_report(StatisticsEngine(store), parsed)
    except ReportError as error:
        return _answer(None, error.message, 400)
    response = _answer(answer.objects, None, 200)
    if answer.truncated:
        response.headers[TRUNCATED_HEADER] = "true"
    return response
