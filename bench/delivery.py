"""Delivery throughput: a campaign of N recipients through `envoi worker` into Postfix's
`smtp-sink` on loopback.

    .venv/bin/python bench/delivery.py --recipients 100000 [--dkim none|rsa|ed25519]
        [--workers 2] [--connections 32] [--database sqlite|postgresql] [--prebuilt-spool]

Builds a throw-away database and serves envoi's API on loopback; creates a project,
an email with personalised HTML and text and 10 tracked links, a CSV audience
uploaded through the API (a first name and a city per line), an `smtp` router to
`smtp-sink`, and an active DKIM key of the From domain when asked. It then:

1. measures `smtp-source` (Postfix's C client) into the same sink, messages of the
   same size over 32 reused sessions: the ceiling of this machine;
2. starts the campaign (the API builds the audience) and runs W `envoi worker --once`
   processes until every row is delivered. The workers build the spool while they
   send, as in production (`spool_build_s`: from their start until the spool was
   complete); with `--prebuilt-spool` it is built first, alone, and timed.

`messages_per_s` counts from the workers' start to the last recorded delivery;
`workers_cpu_s` is the CPU time the worker processes used (user + system), and
`worker_cpu_ms_per_message` that divided by the messages: on a machine shared with
other work, the rate depends on the CPU the workers got, the CPU per message much
less. `peak_rss_mb` is the largest resident set of any worker (sampled, and the
kernel's high-water mark). Figures are printed last, one `name: value` per line.
"""

from __future__ import annotations

import argparse
import os
import resource
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO

import httpx
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from envoi.campaigns.models import Campaign
from envoi.config import Settings
from envoi.core.tokens import MessageLinks, Signer
from envoi.db.base import utcnow
from envoi.db.session import make_engine, make_sessionmaker, transaction, upgrade
from envoi.delivery.render import MessageContext, Recipient
from envoi.delivery.services import compile_for, create_dkim_key
from envoi.projects.services import create_project
from envoi.spool import services as spool
from envoi.spool.models import SpoolEntry
from envoi.testing.databases import scratch_database
from envoi.testing.server import ServerThread
from envoi.web.app import create_app

SINK = "/usr/sbin/smtp-sink"
SOURCE = "/usr/sbin/smtp-source"
ENVOI = Path(sys.executable).parent / "envoi"
CITIES = ("Paris", "Berlin", "Rome", "Madrid", "Lisbon", "Vienna", "Prague", "Oslo")
HTML = (
    "<html><head><style>h1 { color: #224488; font-family: Arial } "
    "p { line-height: 1.4 } .btn { background: #224488; color: #ffffff }</style></head>"
    "<body><h1>Hello {{ first_name }}!</h1>"
    "<p>This week in {{ city }}: our picks, chosen for you.</p>"
    + "".join(
        f'<p><a class="btn" href="https://shop.example.com/item/{i}?c={{{{ city }}}}">'
        f"Item {i}</a> {'Lorem ipsum dolor sit amet, consectetur adipiscing elit. ' * 4}</p>"
        for i in range(10)
    )
    + "<p>See you soon, {{ first_name }}.</p></body></html>"
)
TEXT = (
    "Hello {{ first_name }}!\n\nThis week in {{ city }}: our picks, chosen for you.\n\n"
    + "".join(f"Item {i}: https://shop.example.com/item/{i}\n" for i in range(10))
    + "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 12
    + "\n\nSee you soon, {{ first_name }}.\n"
)
SOURCE_MESSAGES = 50_000
SOURCE_SESSIONS = 32
PEAK_POLL_SECONDS = 0.25


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def smtp_sink(port: int) -> Iterator[subprocess.Popen[bytes]]:
    """Postfix's smtp-sink: accepts and discards everything, as fast as C allows."""
    command = [SINK]
    if os.geteuid() == 0:
        command += ["-u", "nobody"]  # it refuses to run as root otherwise
    command += [f"127.0.0.1:{port}", "1024"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603
    try:
        wait_for_port(port)
        yield process
    finally:
        process.terminate()
        process.wait(timeout=10)


def wait_for_port(port: int) -> None:
    deadline = time.monotonic() + 10
    while True:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing listens on port {port}")
        time.sleep(0.05)


def smtp_source_rate(port: int, size: int) -> float:
    """Messages per second Postfix's smtp-source pushes into the sink (the ceiling)."""
    command = [
        SOURCE, "-d", "-s", str(SOURCE_SESSIONS), "-m", str(SOURCE_MESSAGES), "-l", str(size),
        "-f", "bench@example.com", "-t", "sink@example.com", f"127.0.0.1:{port}",
    ]  # fmt: skip
    began = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)  # noqa: S603
    return SOURCE_MESSAGES / (time.perf_counter() - began)


def audience_csv(path: Path, recipients: int) -> None:
    with path.open("w") as out:
        out.write("email,first_name,city\n")
        for i in range(recipients):
            out.write(f"user{i}@d{i % 997}.example.com,Name{i},{CITIES[i % len(CITIES)]}\n")


def setup_campaign(
    client: httpx.Client, csv_path: Path, sink_port: int, connections: int
) -> tuple[int, int]:
    """Router, category, email, campaign (created, not started); (email id, campaign id)."""
    router = {
        "name": "sink",
        "kind": "smtp",
        "config": {
            "host": "127.0.0.1",
            "port": sink_port,
            "tls": "none",
            "max_connections": connections,
            "messages_per_connection": 100_000,
        },
        "is_default": True,
    }
    check(client.post("/routers", json=router))
    category = check(client.post("/categories", json={"title": "Bench"})).json()["category"]
    email = {
        "category": category,
        "from_address": "Bench News <news@bench.example.com>",
        "subject": "{{ first_name }}, this week in {{ city }}",
        "text_html": HTML,
        "text_plain": TEXT,
    }
    email_id: int = check(client.post("/emails", json=email)).json()["id"]
    with csv_path.open("rb") as csv:
        files = {"source_uploaded_csv": (csv_path.name, csv, "text/csv")}
        form = {"message_type": "L", "message_id": str(email_id), "source_type": "U"}
        campaign_id: int = check(client.post("/campaigns", data=form, files=files)).json()["id"]
    return email_id, campaign_id


def check(response: httpx.Response) -> httpx.Response:
    if response.status_code >= 300:
        raise RuntimeError(f"{response.request.url}: {response.status_code} {response.text}")
    return response


def message_size(
    sessions: sessionmaker[Session], settings: Settings, project_id: int, email_id: int
) -> int:
    """Bytes of one rendered message, for smtp-source's messages of the same size."""
    links = MessageLinks(settings.public_url, Signer(settings.resolved_secret_key()))
    context = MessageContext(project_id, 1, "S_1", "L", (), "bounces.example.com")
    with transaction(sessions) as session:
        compiled = compile_for(session, email_id, None, context, links)
    params = {"first_name": "Name12345", "city": "Paris"}
    return len(compiled.render(Recipient(12345, "user12345@d1.example.com", {}, params)))


def build_spool(sessions: sessionmaker[Session], batch: int) -> float:
    began = time.perf_counter()
    while True:
        with transaction(sessions) as session:
            if not spool.build_step(session, utcnow(), batch):
                return time.perf_counter() - began


def rss_kb(pid: int, field: str) -> int:
    """VmRSS or VmHWM (the kernel's high-water mark) of a live process, in kB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


@dataclass
class WorkerRun:
    wall_s: float
    peak_rss_kb: int
    cpu_s: float  # user + system of the worker processes
    system_s: float  # of which in the kernel


def run_workers(
    env: dict[str, str], count: int, connections: int, log: IO[str], profile: Path | None
) -> WorkerRun:
    """Run `count` workers until they exit; under py-spy when `profile` names a folder
    (one collapsed-stack file per worker; py-spy is not a dependency: pip install it)."""
    command = [str(ENVOI), "worker", "--once", "--connections", str(connections)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    workers = []
    for index in range(count):
        spy: list[str] = []
        if profile is not None:
            output = profile / f"worker-{index}.txt"
            spy = [str(ENVOI.parent / "py-spy"), "record", "-r", "250", "--format", "raw"]
            spy += ["-o", str(output), "--"]
        workers.append(subprocess.Popen([*spy, *command], env=env, stdout=log, stderr=log))  # noqa: S603
    peak = 0
    while any(worker.poll() is None for worker in workers):
        for worker in workers:
            peak = max(peak, rss_kb(worker.pid, "VmHWM"), rss_kb(worker.pid, "VmRSS"))
        time.sleep(PEAK_POLL_SECONDS)
    elapsed = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the workers were reaped by poll()
    codes = [worker.returncode for worker in workers]
    if any(codes):
        raise RuntimeError(f"a worker failed: exit codes {codes}")
    system = after.ru_stime - before.ru_stime
    return WorkerRun(elapsed, peak, after.ru_utime - before.ru_utime + system, system)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a live process (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def delivery_window(sessions: sessionmaker[Session], campaign_id: int) -> tuple[int, datetime]:
    """(rows delivered, when the last one was recorded)."""
    with sessions() as session:
        query = select(func.count(), func.max(SpoolEntry.updated_at)).where(
            SpoolEntry.campaign_id == campaign_id, SpoolEntry.state == "delivered"
        )
        count, last = session.execute(query).one()
        return int(count), last


def spool_built_at(sessions: sessionmaker[Session], campaign_id: int) -> datetime:
    with sessions() as session:
        built = session.get(Campaign, campaign_id)
        if built is None or built.spool_built_at is None:
            raise RuntimeError("the spool was never built")
        return built.spool_built_at


@dataclass
class Setup:
    url: str
    settings: Settings
    sessions: sessionmaker[Session]
    campaign_id: int
    message_bytes: int
    sink_port: int
    sink_pid: int


def set_up(stack: ExitStack, args: argparse.Namespace) -> Setup:
    """Database, API server, sink, project, router, email, uploaded audience."""
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
    url = stack.enter_context(scratch_database(args.database, tmp))
    upgrade(url)
    settings = Settings(
        database_url=url,
        var_dir=tmp,
        secret_key=secrets.token_urlsafe(32),
        public_url="https://track.example.com",
        bounce_domain="bounces.example.com",
        deliver_in_process=False,
    )
    engine = make_engine(url)
    stack.callback(engine.dispose)
    sessions = make_sessionmaker(engine)
    base_url = stack.enter_context(ServerThread(create_app(settings, engine)))
    with transaction(sessions) as session:
        creds = create_project(session, "bench")
        if args.dkim != "none":
            create_dkim_key(session, creds.id, "bench.example.com", "bench", args.dkim, active=True)
    client = stack.enter_context(
        httpx.Client(base_url=f"{base_url}/api/v1", auth=(creds.login, creds.secret), timeout=3600)
    )
    sink_port = free_port()
    sink = stack.enter_context(smtp_sink(sink_port))
    csv_path = tmp / "audience.csv"
    audience_csv(csv_path, args.recipients)
    email_id, campaign_id = setup_campaign(client, csv_path, sink_port, args.connections)
    size = message_size(sessions, settings, creds.id, email_id)
    check(client.post(f"/campaigns/{campaign_id}/start"))
    return Setup(url, settings, sessions, campaign_id, size, sink_port, sink.pid)


def worker_env(setup: Setup) -> dict[str, str]:
    settings = setup.settings
    return {
        **os.environ,
        "ENVOI_DATABASE_URL": setup.url,
        "ENVOI_VAR_DIR": str(settings.var_dir),
        "ENVOI_SECRET_KEY": settings.secret_key,
        "ENVOI_PUBLIC_URL": settings.public_url,
        "ENVOI_BOUNCE_DOMAIN": settings.bounce_domain,
        "ENVOI_ROUTER_TRUSTED_HOSTS": "127.0.0.1",  # the sink
    }


def deliver(setup: Setup, args: argparse.Namespace) -> dict[str, str]:
    """Run the workers (they build the spool while they send); the figures."""
    figures: dict[str, str] = {}
    if args.prebuilt_spool:
        figures["spool_build_s"] = f"{build_spool(setup.sessions, args.build_batch):.2f}"
    started_at = utcnow()
    sink_cpu = cpu_seconds(setup.sink_pid)
    log_path = setup.settings.var_dir / "workers.log"
    with log_path.open("w") as log:
        run = run_workers(worker_env(setup), args.workers, args.connections, log, args.profile)
    sink_cpu = cpu_seconds(setup.sink_pid) - sink_cpu
    delivered, last = delivery_window(setup.sessions, setup.campaign_id)
    if delivered != args.recipients:
        tail = log_path.read_text()[-3000:]
        sys.exit(f"only {delivered} of {args.recipients} delivered; workers' log:\n{tail}")
    if not args.prebuilt_spool:
        built = spool_built_at(setup.sessions, setup.campaign_id) - started_at
        figures["spool_build_s"] = f"{built.total_seconds():.2f}"
    delivery_s = (last - started_at).total_seconds()
    figures |= {
        "delivery_s": f"{delivery_s:.2f}",
        "workers_wall_s": f"{run.wall_s:.2f}",
        "workers_cpu_s": f"{run.cpu_s:.2f}",
        "workers_system_cpu_s": f"{run.system_s:.2f}",
        "worker_cpu_ms_per_message": f"{run.cpu_s / delivered * 1000:.3f}",
        "sink_cpu_s": f"{sink_cpu:.2f}",
        "messages_per_s": f"{delivered / delivery_s:.0f}",
        "peak_rss_mb": f"{run.peak_rss_kb / 1024:.0f}",
    }
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--dkim", choices=["none", "rsa", "ed25519"], default="none")
    parser.add_argument("--workers", type=int, default=2, help="envoi worker processes")
    parser.add_argument("--connections", type=int, default=32, help="per worker")
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument(
        "--prebuilt-spool",
        action="store_true",
        help="build the whole spool (timed) before the workers start, instead of letting "
        "them build it while they send",
    )
    parser.add_argument("--profile", type=Path, help="py-spy each worker into this folder")
    parser.add_argument("--build-batch", type=int, default=1000, help="with --prebuilt-spool")
    args = parser.parse_args()
    for tool in (SINK, SOURCE):
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing (Debian: apt-get install postfix)")
    with ExitStack() as stack:
        began = time.perf_counter()
        setup = set_up(stack, args)
        prepared_s = time.perf_counter() - began
        ceiling = smtp_source_rate(setup.sink_port, setup.message_bytes)
        figures = deliver(setup, args)
    print(f"recipients: {args.recipients}")
    print(f"dkim: {args.dkim}")
    print(f"database: {args.database}")
    print(f"workers: {args.workers}")
    print(f"connections_per_worker: {args.connections}")
    print(f"message_bytes: {setup.message_bytes}")
    print(f"setup_s: {prepared_s:.2f}  # database, API upload of the audience, start")
    for name, value in figures.items():
        print(f"{name}: {value}")
    print(f"smtp_source_per_s: {ceiling:.0f}")


if __name__ == "__main__":
    main()
