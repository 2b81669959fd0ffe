"""What `envoi worker` does: run one delivery worker in the foreground.

Migrations first, then the worker until SIGTERM or SIGINT (graceful: it stops
claiming, finishes and records the SMTP transactions in flight, closes its
sessions; a second signal exits at once), or with `once` until nothing is left to
send now. Progress is a live line on a terminal, JSON log lines otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Iterator

from prometheus_client import start_http_server
from rich.console import Console
from rich.live import Live
from rich.text import Text

from envoi.config import Settings
from envoi.db.session import make_engine, make_sessionmaker, upgrade
from envoi.delivery.workers import DeliveryWorker, run_loop
from envoi.web.observability import configure_logging

log = logging.getLogger("envoi.delivery")

REFRESH_SECONDS = 0.5


def run_worker(
    settings: Settings,
    *,
    connections: int | None = None,
    owner: str | None = None,
    once: bool = False,
    metrics_listen: str | None = None,
) -> None:
    upgrade(settings.database_url)
    settings.resolved_secret_key()  # made once, before two processes race to make it
    engine = make_engine(settings.database_url)
    worker = DeliveryWorker(
        settings, make_sessionmaker(engine), owner=owner, connections=connections
    )
    try:
        with _live() as live:
            configure_logging()  # after the live display, so log lines print above it
            if metrics_listen:
                _serve_metrics(worker, metrics_listen)
            run_loop(_main(worker, once, live))
    finally:
        engine.dispose()


async def _main(worker: DeliveryWorker, once: bool, live: Live | None) -> None:
    loop = asyncio.get_running_loop()
    signals = {"count": 0}

    def on_signal(signum: int) -> None:
        signals["count"] += 1
        if signals["count"] > 1:
            log.warning("second signal: exiting without waiting", extra={"signal": signum})
            os._exit(1)
        log.info("stopping: finishing the messages in flight", extra={"signal": signum})
        worker.request_stop()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    began = time.monotonic()
    display = asyncio.create_task(_refresh(worker, live, began)) if live is not None else None
    try:
        await worker.run(until_idle=once)
    finally:
        if display is not None:
            display.cancel()
            _show(worker, live, began)


@contextlib.contextmanager
def _live() -> Iterator[Live | None]:
    if not sys.stderr.isatty():
        yield None
        return
    console = Console(stderr=True)
    with Live(Text("starting"), console=console, redirect_stderr=True, transient=False) as live:
        yield live


async def _refresh(worker: DeliveryWorker, live: Live | None, began: float) -> None:
    while True:
        _show(worker, live, began)
        await asyncio.sleep(REFRESH_SECONDS)


def _show(worker: DeliveryWorker, live: Live | None, began: float) -> None:
    if live is None:
        return
    counts = worker.counts
    done = sum(counts.values())
    elapsed = max(time.monotonic() - began, 1e-9)
    line = Text.assemble(
        ("delivered ", "bold"),
        (f"{counts['delivered']:,}", "green"),
        "  tempfail ",
        (f"{counts['tempfail']:,}", "yellow"),
        "  permfail ",
        (f"{counts['permfail']:,}", "red"),
        "  skipped ",
        f"{counts['skipped']:,}",
        f"  {done / elapsed:,.0f} msg/s" if done else "",
    )
    live.update(line)


def _serve_metrics(worker: DeliveryWorker, listen: str) -> None:
    host, _, port = listen.rpartition(":")
    start_http_server(int(port), addr=host or "127.0.0.1", registry=worker.metrics.registry)
    log.info("metrics served", extra={"listen": listen})
