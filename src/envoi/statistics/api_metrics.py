"""The native metrics API, `/api/v1/metrics...` (docs/api-metrics.md): thin routes over
`statistics.metrics` and `statistics.recipients`.

- `POST /metrics`: one page of a query, JSON (or CSV with `Accept: text/csv`);
- `POST /metrics/export`: the query as a CSV attachment;
- `GET /metrics/catalogue`: every dimension and measure, with its definition;
- `POST /metrics/recipients`: the recipients behind a count, a page at a time.

Basic auth (the project's login and secret, its IP allowlist). The handlers are
plain functions: FastAPI runs them on its thread pool, off the event loop, as the
event store's reads block. Without the event store (another process holds it) the
statistics routes answer 503 in the native error shape.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from envoi.eventstore.interfaces import EventStore
from envoi.statistics import metrics, recipients
from envoi.statistics.catalogue import describe
from envoi.statistics.metrics import Cursors, Unavailable
from envoi.statistics.plan import MAX_IN, MAX_TREE_DEPTH, MAX_TREE_NODES, OPS
from envoi.statistics.query import UNAVAILABLE, StatisticsEngine
from envoi.statistics.schemas import (
    DEFAULT_LIMIT,
    MAX_DIMENSIONS,
    MAX_LIMIT,
    MAX_METRICS,
    MetricsQuery,
    RecipientsQuery,
)
from envoi.statistics.timebuckets import PRECISIONS
from envoi.web.deps import CurrentProject

router = APIRouter(prefix="/metrics", tags=["metrics"])

CSV = "text/csv"


def _store(request: Request) -> EventStore:
    store: EventStore | None = request.app.state.event_store
    if store is None:
        raise Unavailable(UNAVAILABLE)
    return store


def _cursors(request: Request) -> Cursors:
    return Cursors(request.app.state.settings.resolved_secret_key())


def _wants_csv(request: Request) -> bool:
    """The first of text/csv and application/json the Accept header names."""
    for item in request.headers.get("accept", "").split(","):
        media = item.partition(";")[0].strip().lower()
        if media in (CSV, "application/json"):
            return media == CSV
    return False


def _now() -> datetime:
    return datetime.now(UTC)


@router.post("", response_model=None)
def query_metrics(body: MetricsQuery, request: Request, project: CurrentProject) -> Response:
    """One page of the query's rows (and totals when asked): JSON, or CSV when the
    Accept header prefers text/csv."""
    cursors = _cursors(request)
    prepared = metrics.prepare(body, project.id, cursors, _now())
    engine = StatisticsEngine(_store(request))
    if _wants_csv(request):
        return _csv(engine, prepared, cursors, attachment=False)
    page = metrics.run(engine, prepared, body.limit)
    return JSONResponse(metrics.answer(prepared, page, cursors))


@router.post("/export", response_model=None)
def export_metrics(body: MetricsQuery, request: Request, project: CurrentProject) -> Response:
    """The query as a CSV file: every row, or `limit` of them when the body sets it."""
    cursors = _cursors(request)
    prepared = metrics.prepare(body, project.id, cursors, _now())
    return _csv(StatisticsEngine(_store(request)), prepared, cursors, attachment=True)


def _csv(
    engine: StatisticsEngine, prepared: metrics.Prepared, cursors: Cursors, *, attachment: bool
) -> StreamingResponse:
    limited = "limit" in prepared.body.model_fields_set
    page = metrics.run(engine, prepared, prepared.body.limit if limited else None)
    headers = {}
    if attachment:
        headers["Content-Disposition"] = 'attachment; filename="metrics.csv"'
    following = metrics.next_cursor(prepared, page, cursors)
    if following is not None:
        headers["X-Next-Cursor"] = following
    return StreamingResponse(
        metrics.csv_lines(prepared, page), media_type=f"{CSV}; charset=utf-8", headers=headers
    )


@router.get("/catalogue")
def catalogue(project: CurrentProject) -> dict[str, Any]:
    """Every dimension and measure with its definition, the precisions, the filter
    operators and the limits of a query."""
    del project  # the catalogue is the same for every project; the route still needs auth
    return describe() | {
        "precisions": {"none": None, **PRECISIONS},
        "operators": sorted(OPS),
        "limits": {
            "dimensions": MAX_DIMENSIONS,
            "metrics": MAX_METRICS,
            "limit": MAX_LIMIT,
            "default_limit": DEFAULT_LIMIT,
            "in_values": MAX_IN,
            "filter_depth": MAX_TREE_DEPTH,
            "filter_nodes": MAX_TREE_NODES,
            "zero_filled_buckets": metrics.MAX_BUCKETS,
            "export_rows": metrics.EXPORT_MAX,
        },
    }


@router.post("/recipients")
def recipients_behind(
    body: RecipientsQuery, request: Request, project: CurrentProject
) -> dict[str, Any]:
    """One page of the recipients behind a count, by address then message."""
    cursors = _cursors(request)
    prepared = recipients.prepare(body, project.id, cursors, _now())
    return recipients.run(_store(request), prepared, cursors)
