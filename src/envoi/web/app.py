"""The ASGI application: every HTTP surface of envoi, composed from the domain routers."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from prometheus_client import CollectorRegistry
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from envoi import __version__
from envoi.campaigns.api import is_campaign_write
from envoi.campaigns.api import router as campaigns_router
from envoi.campaigns.scheduler import Scheduler
from envoi.categories.api import router as categories_router
from envoi.config import Settings
from envoi.db.session import make_engine, make_sessionmaker
from envoi.delivery.workers import DeliveryService
from envoi.emails.api import assets_router
from envoi.emails.api import router as emails_router
from envoi.events.api import router as events_router
from envoi.eventstore.duckdb import open_store
from envoi.eventstore.interfaces import EventStore, StoreUnavailable
from envoi.eventstore.projector import Projector
from envoi.eventstore.providers import ProviderDirectory
from envoi.profiles.api import fields_router
from envoi.profiles.api import router as users_router
from envoi.projects.services import Authenticator
from envoi.quarantine.api import router as quarantine_router
from envoi.routers.api import router as routers_router
from envoi.segments.api import router as segments_router
from envoi.segments.workers import SegmentGenerator
from envoi.sends.api import router as sends_router
from envoi.sources.api import router as sources_router
from envoi.statistics.api import jsonrpc_router as stats_jsonrpc_router
from envoi.statistics.api import tags_router as stats_tags_router
from envoi.statistics.api_metrics import router as stats_metrics_router
from envoi.statistics.api_reports import router as stats_reports_router
from envoi.statistics.api_sendstatistics import router as stats_sendstatistics_router
from envoi.statistics.api_spooler import router as stats_spooler_router
from envoi.tracking.api import Tracking, TrackingMiddleware
from envoi.tracking.metrics import TrackingMetrics
from envoi.web.errors import BodyLimitMiddleware, install_error_handlers
from envoi.web.observability import HttpMetrics, ObservabilityMiddleware
from envoi.web.ui.api import router as ui_router

MAX_BODY_BYTES = 64 << 20

log = logging.getLogger(__name__)

health_router = APIRouter(tags=["health"])


@health_router.get("/api/v1/health")
def health() -> dict[str, str]:
    """Liveness probe; needs no credentials."""
    return {"status": "ok", "version": __version__}


def start_projector(
    app: FastAPI, settings: Settings, sessions: sessionmaker[Session], metrics: HttpMetrics
) -> Projector | None:
    """Open the event store (`app.state.event_store`) and project the outbox into it on
    a thread; None (statistics off, said in the log) when another process holds it.
    The store finds events' providers through `app.state.providers` (MX lookups)."""
    providers = ProviderDirectory.from_settings(settings)
    try:
        store = open_store(settings.events_store_url, providers)
    except StoreUnavailable as exc:
        providers.close()
        log.error("event store unavailable: statistics are off", extra={"error": exc.message})
        return None
    projector = Projector(sessions, store, poll_seconds=settings.worker_poll_seconds)
    metrics.include(projector.metrics.registry)
    metrics.include(providers.metrics.registry)
    app.state.event_store = store
    app.state.providers = providers
    projector.start()
    return projector


def _event_store(app: FastAPI) -> EventStore | None:
    store: EventStore | None = app.state.event_store
    return store


def _mount(app: FastAPI) -> None:
    """Every router of the HTTP surfaces: the native API, the compatible ones at their
    seeds' own paths, the public assets and the web UI."""
    app.include_router(health_router)
    for router in (
        categories_router,
        emails_router,
        fields_router,
        users_router,
        segments_router,
        campaigns_router,
        sources_router,
        events_router,
        routers_router,
        quarantine_router,
        sends_router,  # POST /api/v1/send, GET /api/v1/send/{id}
        stats_reports_router,  # seed 002's report builder: GET /api/v1/stats
        stats_metrics_router,  # the native metrics API: /api/v1/metrics...
    ):
        app.include_router(router, prefix="/api/v1")
    app.include_router(assets_router)
    # The compatible statistics surfaces, at their seeds' own paths.
    app.include_router(stats_jsonrpc_router)  # seed 001: POST /api/1.5/
    app.include_router(stats_tags_router)  # seed 004: GET /v1/stats/{tag}
    app.include_router(stats_spooler_router)  # seed 000: POST /api/3.0/statistics/spooler/...
    app.include_router(stats_sendstatistics_router)  # seed 003: GET /mailer/sendstatistics
    app.include_router(ui_router)  # the web UI: /ui/...


def create_app(
    settings: Settings,
    engine: Engine | None = None,
    registries: Sequence[CollectorRegistry] = (),
) -> FastAPI:
    """Build the app around one engine; the caller owns migrations and the engine's life.
    `registries`: metrics of other services of the process, shown at `/metrics` too."""
    engine = engine or make_engine(settings.database_url)
    sessions = make_sessionmaker(engine)
    segment_generator = SegmentGenerator(sessions)
    delivery = DeliveryService(settings, sessions) if settings.deliver_in_process else None
    app: FastAPI  # built below; the scheduler reads its event store once it runs
    scheduler = (
        Scheduler.from_settings(
            settings,
            sessions,
            on_work=delivery.wake if delivery else None,
            # A/B tests are decided from the event store the lifespan opens.
            events=lambda: _event_store(app),
        )
        if settings.scheduler_in_process
        else None
    )
    metrics = HttpMetrics()
    tracking = Tracking(settings, sessions, TrackingMetrics(metrics.registry))
    for registry in (
        *registries,
        *([delivery.metrics.registry] if delivery else []),
        *([scheduler.metrics.registry] if scheduler else []),
    ):
        metrics.include(registry)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Background workers live exactly as long as the server.
        segment_generator.start()
        tracking.start()
        if delivery is not None:
            delivery.start()
        if scheduler is not None:
            scheduler.start()
        projector = start_projector(app, settings, sessions, metrics)
        # What exists now (the app, SQLAlchemy's and FastAPI's structures, caches
        # warmed by `tracking.start`) lives as long as the server: out of the cyclic
        # garbage collector's way. Otherwise each full collection walks all of it, about
        # 100 ms with the loop stopped: a tracking hit's p99 went from 24 ms to 120 ms.
        gc.freeze()
        try:
            yield
        finally:
            gc.unfreeze()  # several apps in one process (tests): collectable again
            if scheduler is not None:
                scheduler.stop()
            if delivery is not None:
                delivery.stop()
            tracking.stop()
            segment_generator.stop()
            if projector is not None:
                projector.stop()
                app.state.event_store = None
                projector.store.close()
                app.state.providers.close()

    app = FastAPI(
        lifespan=lifespan,
        title="envoi",
        version=__version__,
        openapi_url="/api/v1/openapi.json",
        docs_url="/api/v1/docs",
        redoc_url=None,
        # envoi reports through Prometheus (`/metrics`), not OpenTelemetry; FastAPI's
        # native telemetry would otherwise look up OpenTelemetry's providers (an
        # environment read) on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessionmaker = sessions
    app.state.authenticator = Authenticator(max_failures=settings.auth_max_failures)
    app.state.segment_generator = segment_generator
    app.state.scheduler = scheduler
    app.state.tracking = tracking
    app.state.event_store = None  # the EventStore while the server runs (its lifespan)
    install_error_handlers(app)
    # No JSON body of the API comes near the cap (10,000 profiles are ~3 MiB); campaign
    # writes carry address lists and enforce their own, larger, limit.
    app.add_middleware(BodyLimitMiddleware, limit=MAX_BODY_BYTES, exempt=is_campaign_write)
    app.add_middleware(ObservabilityMiddleware, metrics=metrics)
    app.add_route("/metrics", metrics.render, include_in_schema=False)
    _mount(app)
    # Last, so outermost: tracking hits (`/t/...`) are answered before any other
    # middleware or FastAPI's routing runs (`tracking.api`).
    app.add_middleware(TrackingMiddleware, tracking=tracking)
    return app
