"""Tracking throughput and latency: opens and clicks of a delivered campaign, from wrk on
loopback into `envoi serve`.

    .venv/bin/python bench/tracking.py [--seconds 10] [--connections 64]
        [--database sqlite|postgresql] [--threads 1]

Builds a throw-away database with one project, one email with three literal links,
and a campaign whose spool holds 10,000 delivered rows (written directly: no
delivery is needed to measure tracking). It starts `envoi serve` in a subprocess on a
free port (`ENVOI_DELIVER_IN_PROCESS=false`: the server only answers HTTP), then runs
wrk (Debian's package: `apt-get install -y wrk`) with a Lua script that rotates
through the signed URLs of random sends, half opens and half clicks of one of the
three links, over C keep-alive connections. wrk and the server share the machine.

Every answered hit must be durable: afterwards the outbox must hold one row per
2xx/3xx answer (`recorded` and `answered`; a hit whose answer was still on its way
when wrk stopped may be recorded without being counted as answered, so `recorded`
may exceed `answered` by at most the connections). Figures are printed last, one
`name: value` per line: `hits_per_s`, `p50_ms`, `p99_ms`, `recorded`, `answered`.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy import func, select

from envoi.campaigns.models import Campaign
from envoi.categories.models import Category
from envoi.core.tokens import MessageLinks, Signer
from envoi.db.session import make_engine, make_sessionmaker, transaction, upgrade
from envoi.emails.models import Email, EmailContent
from envoi.outbox.models import OutboxEvent
from envoi.projects.services import create_project
from envoi.spool.bulk import SPOOL, bulk_insert
from envoi.testing.databases import scratch_database

ENVOI = Path(sys.executable).parent / "envoi"
WRK = "wrk"
SENDS = 10_000
LINKS = 3
PATHS = 20_000  # distinct URLs the Lua script rotates through
SECRET = "bench-tracking-secret-key"  # noqa: S105 - a throw-away database's key
HTML = (
    "<html><body><p>Hello {{ first_name }}!</p>"
    + "".join(
        f'<p><a href="https://shop.example.com/item/{i}">Item {i}</a></p>' for i in range(LINKS)
    )
    + "</body></html>"
)
LUA = """
local paths = {%s}
local agent = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
local i = 0
init = function(args)
  i = math.random(#paths)
end
request = function()
  i = i + 1
  if i > #paths then i = 1 end
  return wrk.format("GET", paths[i], {["User-Agent"] = agent})
end
done = function(summary, latency, requests)
  io.write(string.format("lua_requests: %%d\\n", summary.requests))
  io.write(string.format("lua_status_errors: %%d\\n", summary.errors.status))
  io.write(string.format("lua_socket_errors: %%d\\n", summary.errors.connect
    + summary.errors.read + summary.errors.write + summary.errors.timeout))
  io.write(string.format("lua_duration_us: %%d\\n", summary.duration))
  io.write(string.format("lua_p50_us: %%d\\n", latency:percentile(50.0)))
  io.write(string.format("lua_p90_us: %%d\\n", latency:percentile(90.0)))
  io.write(string.format("lua_p99_us: %%d\\n", latency:percentile(99.0)))
  io.write(string.format("lua_max_us: %%d\\n", latency.max))
end
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def set_up(url: str) -> tuple[int, list[int]]:
    """Project, email, campaign and its SENDS delivered spool rows; (campaign, send ids)."""
    upgrade(url)
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    delivered = datetime.now(UTC) - timedelta(hours=1)  # clicks are no scanner's
    with transaction(sessions) as session:
        creds = create_project(session, "Bench", login=f"bench-{secrets.token_hex(4)}")
        category = Category(project_id=creds.id, title="News", translations={})
        session.add(category)
        session.flush()
        email = Email(
            project_id=creds.id,
            category_id=category.id,
            from_address="news@bench.example.com",
            asset_key=secrets.token_hex(16),
        )
        email.contents = [EmailContent(language="", subject="Hi", text_html=HTML)]
        session.add(email)
        session.flush()
        campaign = Campaign(
            project_id=creds.id,
            post_type="S",
            message_type="L",
            message_id=email.id,
            source_type="U",
            tags="bench, tracking",
            state="finished",
            spooler_token=secrets.token_hex(16),
        )
        session.add(campaign)
        session.flush()
        rows = [
            {
                "project_id": creds.id,
                "campaign_id": campaign.id,
                "email_id": email.id,
                "profile_id": None,
                "recipient": f"user{i}@d{i % 97}.example.com",
                "domain": f"d{i % 97}.example.com",
                "params": {"first_name": f"Name{i}"},
                "priority": 0,
                "state": "delivered",
                "reason": None,
                "not_before": delivered,
                "attempts": 1,
                "first_attempt_at": delivered,
                "lease_owner": None,
                "lease_until": None,
                "uncertain": False,
                "router": "capture",
                "language": "",
                "smtp_code": 250,
                "smtp_status": "2.0.0",
                "smtp_text": "ok",
                "updated_at": delivered,
            }
            for i in range(SENDS)
        ]
        ids = bulk_insert(session, SPOOL, rows, return_ids=True)
        campaign_id = campaign.id
    engine.dispose()
    return campaign_id, ids


def lua_script(path: Path, ids: list[int]) -> None:
    """PATHS signed URLs of random sends: half opens, half clicks of a random link."""
    links = MessageLinks("", Signer(SECRET))
    chosen = random.Random(42)  # noqa: S311 - a benchmark's mix, not a secret
    paths = []
    for n in range(PATHS):
        send_id = chosen.choice(ids)
        url = links.open(send_id) if n % 2 == 0 else links.click(send_id, chosen.randrange(LINKS))
        paths.append(f'"{url}"')
    path.write_text(LUA % ",".join(paths))


def start_server(url: str, var_dir: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "ENVOI_DATABASE_URL": url,
        "ENVOI_VAR_DIR": str(var_dir),
        "ENVOI_SECRET_KEY": SECRET,
        "ENVOI_HTTP_LISTEN": f"127.0.0.1:{port}",
        "ENVOI_DELIVER_IN_PROCESS": "false",
    }
    with log.open("wb") as out:
        process = subprocess.Popen(  # noqa: S603 - our own console script
            [str(ENVOI), "serve"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/v1/health").status_code == 200:
                return process
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            raise RuntimeError(f"envoi serve did not start: {log.read_text()[-2000:]}")
        time.sleep(0.1)


def run_wrk(port: int, script: Path, args: argparse.Namespace) -> dict[str, float]:
    command = [
        WRK, "--latency", "-t", str(args.threads), "-c", str(args.connections),
        "-d", f"{args.seconds}s", "--timeout", "10s", "-s", str(script),
        f"http://127.0.0.1:{port}",
    ]  # fmt: skip
    done = subprocess.run(command, check=True, capture_output=True, text=True)  # noqa: S603
    print(done.stdout)
    return {
        name: float(value) for name, value in re.findall(r"^(lua_\w+): (\d+)$", done.stdout, re.M)
    }


def server_metric(port: int, name: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    found = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(found[1]) if found else 0.0


def recorded(url: str, campaign_id: int) -> int:
    engine = make_engine(url)
    try:
        with make_sessionmaker(engine)() as session:
            count = session.scalar(
                select(func.count()).where(
                    OutboxEvent.campaign_id == campaign_id, OutboxEvent.kind.in_(["open", "click"])
                )
            )
            return int(count or 0)
    finally:
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    args = parser.parse_args()
    if shutil.which(WRK) is None:
        print("wrk is missing: install it with `apt-get install -y wrk` (Debian)", file=sys.stderr)
        sys.exit(2)
    with ExitStack() as stack:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="envoi-bench-")))
        url = stack.enter_context(scratch_database(args.database, directory))
        campaign_id, ids = set_up(url)
        script = directory / "paths.lua"
        lua_script(script, ids)
        port = free_port()
        server = start_server(url, directory / "var", port, directory / "serve.log")
        try:
            figures = run_wrk(port, script, args)
            batches = server_metric(port, "envoi_tracking_batch_hits_count")
            batch_hits = server_metric(port, "envoi_tracking_batch_hits_sum")
            commit_seconds = server_metric(port, "envoi_tracking_commit_seconds_sum")
        finally:
            server.terminate()
            server.wait(timeout=30)
        rows = recorded(url, campaign_id)
    requests = figures["lua_requests"]
    answered = int(requests - figures["lua_status_errors"])
    seconds = figures["lua_duration_us"] / 1e6
    print(f"database: {args.database}")
    print(f"connections: {args.connections}")
    print(f"seconds: {seconds:.1f}")
    print(f"socket_errors: {int(figures['lua_socket_errors'])}")
    print(f"status_errors: {int(figures['lua_status_errors'])}")
    print(f"batches: {int(batches)}")
    print(f"mean_batch_hits: {batch_hits / batches if batches else 0:.1f}")
    print(f"mean_commit_ms: {1000 * commit_seconds / batches if batches else 0:.2f}")
    print(f"p90_ms: {figures['lua_p90_us'] / 1000:.2f}")
    print(f"max_ms: {figures['lua_max_us'] / 1000:.2f}")
    print(f"recorded: {rows}")
    print(f"answered: {answered}")
    durable = answered <= rows <= answered + args.connections
    print(f"durable: {'yes' if durable else 'NO'}")
    print(f"hits_per_s: {requests / seconds:.0f}")
    print(f"p50_ms: {figures['lua_p50_us'] / 1000:.2f}")
    print(f"p99_ms: {figures['lua_p99_us'] / 1000:.2f}")
    if not durable:
        sys.exit(1)


if __name__ == "__main__":
    main()
