"""A real MTA's own DSN: Postfix from Debian bounces a message envoi sent, and envoi's
listener classifies the bounce Postfix writes.

envoi delivers a campaign through an `smtp` router to a private Postfix on loopback
(its own configuration, queue and ports under the test's temporary directory). The
recipient is a user of Postfix's local domain that does not exist: Postfix takes the
message, its local delivery agent finds no such user, and Postfix sends a DSN to the
envelope sender, envoi's VERP return path `bounces+TOKEN@envoi.test`, relayed
(`relayhost`) to envoi's inbound listener. The bounce must come back to its send as
a hard `user_unknown` and quarantine the address.

Postfix must run as root (its master binds and drops privileges to `mail_owner`);
the Debian package creates the `postfix` user and `postdrop` group. Without
/usr/sbin/postfix, or as another user, the test is skipped, except in CI, where
`.ci/run` installs Postfix and the test must run.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from envoi.db.session import transaction
from envoi.inbound.listener import FeedbackListener
from envoi.projects.services import create_project
from tests.conftest import Backend, served_backend
from tests.delivery_support import (
    campaign_state,
    create_email,
    outbox,
    running_worker,
    start_campaign,
    wait_until,
)

POSTFIX = Path("/usr/sbin/postfix")
LOCAL_DOMAIN = "postfix.example.net"  # Postfix's own (mydestination): it delivers here
BOUNCE_DOMAIN = "envoi.test"
IN_CI = os.environ.get("CI") == "true"
# Postfix's daemons, none chrooted (a chroot would need /etc files copied into it).
MASTER_CF = """\
{listen} inet n - n - - smtpd
pickup unix n - n 60 1 pickup
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
smtp unix - - n - - smtp
relay unix - - n - - smtp
showq unix n - n - - showq
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
local unix - n n - - local
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _unavailable() -> str | None:
    """Why Postfix cannot run here, if it cannot."""
    if not POSTFIX.exists():
        return f"{POSTFIX} is absent (Debian package `postfix`; .ci/run installs it)"
    if os.geteuid() != 0:
        return "Postfix's master must start as root"
    return None


@dataclass(frozen=True)
class Postfix:
    port: int
    log: Path


@pytest.fixture
def postfix(listener: FeedbackListener) -> Iterator[Postfix]:
    """A private Postfix on 127.0.0.1, relaying every non-local message (its DSNs
    included) to the listener, stopped at the end."""
    reason = _unavailable()
    if reason is not None:
        if IN_CI:
            pytest.fail(f"CI must run the Postfix test: {reason}")
        pytest.skip(reason)
    # Not under pytest's tmp_path: its parents are private to root, and Postfix's
    # daemons, once they dropped to `mail_owner`, must reach `data_directory`.
    root = Path(tempfile.mkdtemp(prefix="envoi-postfix-"))
    try:
        yield from _running(root, listener.port)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _running(root: Path, relay_port: int) -> Iterator[Postfix]:
    config, queue, data, spool = (root / name for name in ("etc", "queue", "data", "mail"))
    for directory in (config, queue, data, spool):
        directory.mkdir()
    root.chmod(0o755)
    shutil.chown(data, "postfix")  # the master's lock file lives there
    port = _free_port()
    log = root / "maillog"
    (config / "main.cf").write_text(
        f"""\
compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
mail_spool_directory = {spool}
mail_owner = postfix
setgid_group = postdrop
maillog_file = {log}
maillog_file_prefixes = {root}
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = mx.{LOCAL_DOMAIN}
mydomain = {LOCAL_DOMAIN}
myorigin = {LOCAL_DOMAIN}
mydestination = {LOCAL_DOMAIN}
mynetworks = 127.0.0.0/8
# Take any local recipient at RCPT: the local delivery agent then finds no such user
# and Postfix writes its own DSN (rather than refusing in-band).
local_recipient_maps =
alias_maps =
alias_database =
relayhost = [127.0.0.1]:{relay_port}
smtp_tls_security_level = none
smtpd_tls_security_level = none
"""
    )
    (config / "master.cf").write_text(MASTER_CF.format(listen=f"127.0.0.1:{port}"))
    started = subprocess.run(  # noqa: S603 - Debian's Postfix, our own config
        [str(POSTFIX), "-c", str(config), "start"], capture_output=True, text=True, check=False
    )
    if started.returncode != 0:
        shown = log.read_text() if log.exists() else started.stderr
        pytest.fail(f"postfix did not start: {shown}")
    try:
        _wait_for_port(port)
        yield Postfix(port, log)
    finally:
        _stop(config, queue)


def _wait_for_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _stop(config: Path, queue: Path) -> None:
    """`postfix stop`, then wait for the master to be gone (its pid file names it)."""
    pid_file = queue / "pid" / "master.pid"
    pid = int(pid_file.read_text().split()[0]) if pid_file.exists() else None
    subprocess.run(  # noqa: S603 - Debian's Postfix, our own config
        [str(POSTFIX), "-c", str(config), "stop"], capture_output=True, check=False
    )
    deadline = time.monotonic() + 10
    while pid is not None and time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[Backend]:
    """A database of this test's own (SQLite: Postfix, not the store, is on trial)."""
    with served_backend("sqlite", tmp_path / "var", bounce_domain=BOUNCE_DOMAIN) as served:
        yield served


@pytest.fixture
def listener(backend: Backend) -> Iterator[FeedbackListener]:
    settings = backend.settings.model_copy(update={"smtp_listen": f"127.0.0.1:{_free_port()}"})
    with FeedbackListener(settings, backend.sessions) as running:
        yield running


def test_postfix_dsn_for_an_unknown_local_user_is_a_hard_user_unknown_bounce(
    backend: Backend, postfix: Postfix
) -> None:
    with transaction(backend.sessions) as session:
        creds = create_project(session, "Postfix", login=f"p-{secrets.token_hex(6)}")
    with httpx.Client(
        base_url=f"{backend.base_url}/api/v1", auth=(creds.login, creds.secret), timeout=30
    ) as client:
        router = {
            "name": "postfix",
            "kind": "smtp",
            "config": {"host": "127.0.0.1", "port": postfix.port, "tls": "none", "timeout": 10},
            "is_default": True,
        }
        assert client.post("/routers", json=router).status_code == 201
        recipient = f"envoi-no-such-user-{secrets.token_hex(4)}@{LOCAL_DOMAIN}"
        campaign = start_campaign(client, create_email(client), [recipient])
        with running_worker(backend.settings, backend.sessions):
            wait_until(
                lambda: campaign_state(client, campaign["id"]) == "finished",
                what="the campaign to be delivered to Postfix",
            )
        [bounce] = wait_until(
            lambda: [e for e in outbox(backend.sessions, campaign["id"]) if e.kind == "bounce"],
            timeout=20,
            what="Postfix's DSN to reach envoi",
            show=lambda: postfix.log.read_text()[-2000:],
        )
        quarantined = client.get("/quarantine").json()

    events = outbox(backend.sessions, campaign["id"])
    assert sorted(e.kind for e in events) == ["bounce", "delivered", "queued"]
    [delivered] = [e for e in events if e.kind == "delivered"]
    assert bounce.recipient == recipient
    assert bounce.data["send_id"] == delivered.data["send_id"]
    assert bounce.data["post"] == campaign["post"]
    assert bounce.data["router"] == "postfix"
    assert {
        key: bounce.data[key]
        for key in ("bounce_class", "bounce_reason", "hard", "smtp_status", "in_band")
    } == {
        "bounce_class": "user_unknown",
        "bounce_reason": "user_unknown",
        "hard": True,
        "smtp_status": "5.1.1",
        "in_band": False,
    }
    assert bounce.data["reporting_mta"] == f"mx.{LOCAL_DOMAIN}"
    assert "unknown user" in (bounce.data["smtp_text"] or "")
    assert [(q["address"], q["reason"]) for q in quarantined] == [(recipient, "nonexistent")]
