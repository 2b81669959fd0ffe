"""`envoi bounce classify FILE...`: one JSON line per recipient of each saved message."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from envoi.cli import app
from envoi.inbound.cli import bounce_app

SAMPLES = Path(__file__).resolve().parent / "samples" / "feedback"
FIELDS = [
    "file",
    "kind",
    "recipient",
    "reason",
    "class",
    "error_code",
    "hard",
    "smtp_code",
    "status",
    "diagnostic",
    "reporting_mta",
    "feedback_type",
    "send_tokens",
]

runner = CliRunner()


def lines(stdout: str) -> list[dict[str, object]]:
    rows = [json.loads(line) for line in stdout.splitlines()]
    assert all(list(row) == FIELDS for row in rows)
    return rows


def test_classify_prints_one_line_per_recipient() -> None:
    postfix = str(SAMPLES / "dsn-postfix-user-unknown.eml")
    multi = str(SAMPLES / "dsn-rfc3464-multi-recipient.eml")
    arf = str(SAMPLES / "arf-yahoo-cfl.eml")
    result = runner.invoke(bounce_app, ["classify", postfix, multi, arf])
    assert result.exit_code == 0, result.output
    rows = lines(result.stdout)
    assert rows[0] == {
        "file": postfix,
        "kind": "bounce",
        "recipient": "nobody@example.org",
        "reason": "user_unknown",
        "class": "user_unknown",
        "error_code": 11,
        "hard": True,
        "smtp_code": 550,
        "status": "5.1.1",
        "diagnostic": "<nobody@example.org>: Recipient address rejected: User unknown in "
        "virtual mailbox table",
        "reporting_mta": "mx.example.org",
        "feedback_type": None,
        "send_tokens": ["2001.5f1e0c9a7b3d2e8f6a41"],
    }
    assert [(r["file"], r["kind"], r["recipient"]) for r in rows[1:]] == [
        (multi, "bounce", "arathib@vnet.ibm.com"),
        (multi, "delayed", "johnh@hpnjld.njd.hp.com"),
        (multi, "bounce", "wsnell@sdcc13.ucsd.edu"),
        (arf, "complaint", "complainer.jane@yahoo.com"),
    ]
    assert rows[-1]["feedback_type"] == "abuse"
    assert rows[-1]["reason"] is None


def test_an_unreadable_file_is_named_on_stderr_after_the_others_are_done(tmp_path: Path) -> None:
    missing = tmp_path / "missing.eml"
    qmail = str(SAMPLES / "text-qmail-no-mailbox.eml")
    result = runner.invoke(bounce_app, ["classify", str(missing), qmail, str(tmp_path)])
    assert result.exit_code == 1
    assert [r["recipient"] for r in lines(result.stdout)] == ["nomailbox@example.net"]
    assert result.stderr.splitlines() == [
        f"error: {missing}: No such file or directory",
        f"error: {tmp_path}: Is a directory",
    ]


def test_a_dash_reads_the_message_from_standard_input() -> None:
    raw = (SAMPLES / "autoreply-vacation.eml").read_bytes()
    result = runner.invoke(bounce_app, ["classify", "-"], input=raw)
    assert result.exit_code == 0, result.output
    (row,) = lines(result.stdout)
    assert (row["file"], row["kind"], row["recipient"]) == (
        "-",
        "autoreply",
        "paul.martin@example.com",
    )


def test_garbage_is_a_not_bounce_line(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.eml"
    garbage.write_bytes(bytes(range(256)))
    result = runner.invoke(bounce_app, ["classify", str(garbage)])
    assert result.exit_code == 0, result.output
    (row,) = lines(result.stdout)
    assert row["kind"] == "not-bounce"
    assert row["recipient"] is None


def test_classify_needs_a_file() -> None:
    result = runner.invoke(bounce_app, ["classify"])
    assert result.exit_code == 2
    assert "Missing argument" in result.output


# The lead wires the group into the `envoi` command, in src/envoi/cli.py:
#     from envoi.inbound.cli import bounce_app
#     app.add_typer(bounce_app, name="bounce")
WIRED = any(group.name == "bounce" for group in app.registered_groups)


@pytest.mark.skipif(
    not WIRED,
    reason='not wired yet: src/envoi/cli.py needs app.add_typer(bounce_app, name="bounce")',
)
def test_the_installed_envoi_command_classifies() -> None:
    envoi = Path(sys.executable).parent / "envoi"
    sample = str(SAMPLES / "text-exim-user-unknown.eml")
    done = subprocess.run(  # noqa: S603 - our own console script
        [str(envoi), "bounce", "classify", sample, "/nonexistent/bounce.eml"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    (row,) = lines(done.stdout)
    assert (row["kind"], row["recipient"], row["status"]) == (
        "bounce",
        "unknown.user@example.com",
        "5.1.1",
    )
    assert done.stderr.strip() == "error: /nonexistent/bounce.eml: No such file or directory"
