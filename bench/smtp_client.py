"""CPU cost of envoi's SMTP client per message, rendering and database left out.

    .venv/bin/python bench/smtp_client.py [--messages 20000] [--rounds 5] [--connections 32]

Starts Postfix's `smtp-sink` on loopback (C, pipelining, discards everything) and sends
MESSAGES messages of about 8 KB through envoi's `smtp` router transport
(`routers.smtp.SmtpTransport`: limits, pool, pipelining session) on a uvloop event
loop, as a worker does, ROUNDS times, in two ways:

- `transport`: CONNECTIONS coroutines each awaiting `transport.send` in turn: the SMTP
  client alone;
- `lanes`: the worker's own `delivery.lanes.Lanes` with CONNECTIONS lanes, its metrics
  and queue, fed pre-built messages by a stand-in factory and a stand-in group commit
  that resolves every write on the next loop turn (no database): `Lanes._send_one`
  minus rendering.

Figures are printed last, one `name: value` per line. Times are this process's CPU time
(user and kernel; the sink's is not counted), in µs per message: the best round (the
least disturbed), the median round, the kernel's share of the best round (the sockets:
about two writes and two reads a message), and the wall rate of the best round.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import socket
import statistics
import subprocess
import time
from collections import Counter
from types import SimpleNamespace
from typing import Any, cast

import uvloop

from envoi.config import Settings
from envoi.delivery.commits import GroupCommit
from envoi.delivery.interfaces import Envelope
from envoi.delivery.lanes import Lanes
from envoi.delivery.metrics import DeliveryMetrics
from envoi.delivery.preparing import Job, MessageFactory, Outgoing
from envoi.routers.network import OPEN
from envoi.routers.schemas import SmtpConfig
from envoi.routers.smtp import SmtpTransport
from envoi.spool.leasing import Claim

SINK = "/usr/sbin/smtp-sink"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_sink(port: int) -> subprocess.Popen[bytes]:
    command = [SINK]
    if os.geteuid() == 0:
        command += ["-u", "nobody"]  # it refuses to run as root otherwise
    command += [f"127.0.0.1:{port}", "1024"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process
        except OSError:
            time.sleep(0.02)
    process.kill()
    raise SystemExit("smtp-sink did not start")


def message(size: int = 8192) -> bytes:
    """A MIME message of about `size` bytes shaped like a rendered one: CRLF line ends,
    quoted-printable HTML with tracked links, no line starting with a dot."""
    head = (
        b"From: Shop <news@shop.example>\r\nTo: someone@example.org\r\n"
        b"Subject: This week's picks\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/html; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
    )
    lines = (
        b"<p>New colours and light fabrics, picked for you. Free delivery from 50 eu=\r\n"
        b"ros, returns within 30 days: a =C3=A9t=C3=A9 sale.</p>\r\n"
        b'<a href=3D"https://track.example.com/t/c/0-1.f0af0074fdb341972831">Offer=\r\n'
        b" 1</a>\r\n"
    )
    return head + lines * ((size - len(head)) // len(lines))


def transport(port: int, connections: int) -> SmtpTransport:
    config = SmtpConfig(
        host="127.0.0.1", port=port, tls="none", max_connections=connections, helo="bench"
    )
    return SmtpTransport(config, policy=OPEN)


def envelope(index: int) -> Envelope:
    return Envelope("bounce+1@shop.example", f"user{index}@example.org", "example.org")


async def run_transport(port: int, messages: int, connections: int, data: bytes) -> int:
    smtp = transport(port, connections)
    delivered = 0
    counter = iter(range(messages))

    async def sender() -> None:
        nonlocal delivered
        for index in counter:
            reply = await smtp.send(envelope(index), data)
            delivered += reply.code == 250

    await asyncio.gather(*(sender() for _ in range(connections)))
    await smtp.close()
    return delivered


class _Factory:
    """Stands in for `MessageFactory`: every row is a running campaign's pre-built message."""

    def __init__(self, smtp: SmtpTransport, data: bytes) -> None:
        self._campaign = SimpleNamespace(state="running", hook=None)
        self._smtp = smtp
        self._data = data

    def campaign(self, job: Job) -> Any:
        return self._campaign

    def build(self, job: Job, params: dict[str, Any]) -> Outgoing:
        return Outgoing(envelope(job.claim.id), self._data, self._smtp, "relay", "en")


class _Commits:
    """Stands in for `GroupCommit`: every write is durable on the next loop turn."""

    def __init__(self) -> None:
        self._waiting: list[asyncio.Future[bool]] = []
        self.done = 0

    def submit(self, *, results: Any = None, mark: Any = None, releases: Any = None) -> Any:
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        if not self._waiting:
            asyncio.get_running_loop().call_soon(self._commit)
        self._waiting.append(future)
        self.done += len(results or ())
        return future

    def _commit(self) -> None:
        waiting, self._waiting = self._waiting, []
        for future in waiting:
            future.set_result(True)


async def run_lanes(port: int, messages: int, connections: int, data: bytes) -> int:
    smtp = transport(port, connections)
    settings = Settings(worker_batch=messages * 2, worker_lease_seconds=3600)
    commits = _Commits()
    counts: Counter[str] = Counter()
    lanes = Lanes(
        settings,
        owner="bench",
        factory=cast(MessageFactory, _Factory(smtp, data)),
        commits=cast(GroupCommit, commits),
        metrics=DeliveryMetrics(),
        counts=counts,
        running_low=lambda: None,
    )
    now = time.monotonic()
    jobs = [
        Job(
            Claim(i, 1, 1, 1, None, f"user{i}@example.org", "example.org", {}, 0, False, 0), {}, now
        )
        for i in range(messages)
    ]
    lanes.put(jobs)
    lanes.start(connections)
    while lanes.queue.qsize() or lanes.busy:
        await asyncio.sleep(0.005)
    await lanes.stop()
    await smtp.close()
    return counts["delivered"]


def measure(
    kind: str, port: int, args: argparse.Namespace, data: bytes
) -> tuple[float, float, float]:
    """One round: (CPU µs per message, of which in the kernel, messages per wall second)."""
    run = run_transport if kind == "transport" else run_lanes
    wall, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        delivered = runner.run(run(port, args.messages, args.connections, data))
    after, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - wall
    if delivered != args.messages:
        raise SystemExit(f"{kind}: {delivered} of {args.messages} delivered")
    system = after.ru_stime - before.ru_stime
    cpu = after.ru_utime - before.ru_utime + system
    return cpu / args.messages * 1e6, system / args.messages * 1e6, args.messages / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--only", choices=("transport", "lanes"))
    args = parser.parse_args()
    data = message()
    port = free_port()
    sink = start_sink(port)
    figures: dict[str, str] = {"message_bytes": str(len(data))}
    try:
        for kind in ("transport", "lanes"):
            if args.only and kind != args.only:
                continue
            rounds = [measure(kind, port, args, data) for _ in range(args.rounds)]
            best = min(rounds)
            print(f"{kind}: " + " ".join(f"{r[0]:.1f}" for r in rounds) + " µs/msg")
            figures[f"{kind}_cpu_us_per_msg"] = f"{best[0]:.1f}"
            figures[f"{kind}_cpu_us_per_msg_median"] = (
                f"{statistics.median(r[0] for r in rounds):.1f}"
            )
            figures[f"{kind}_kernel_us_per_msg"] = f"{best[1]:.1f}"
            figures[f"{kind}_msgs_per_s"] = f"{best[2]:.0f}"
    finally:
        sink.terminate()
        sink.wait()
    for name, value in figures.items():
        print(f"{name}: {value}")


if __name__ == "__main__":
    main()
