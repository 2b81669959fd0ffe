"""DKIM keys in the OLTP store and `envoi dkim`: keys per project and sending domain,
made inactive, signing once activated after their DNS record is found (the DNS of
real domains is the one thing mocked), and the compiled message of a project's email.
"""

from __future__ import annotations

import json
from pathlib import Path

import dkim  # type: ignore[import-untyped]  # dkimpy ships no type information
import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from envoi.cli import app
from envoi.core.errors import Conflict, Invalid, NotFound
from envoi.db.session import transaction
from envoi.delivery import services
from envoi.delivery.models import DkimKey
from envoi.delivery.render import MessageContext, Recipient
from envoi.testing.databases import sqlite_url
from tests.conftest import ApiProject, Backend
from tests.test_dkim import LINKS, MESSAGES, dns_for
from tests.test_emails import new_email

# --- keys in the OLTP store -----------------------------------------------------------


def _key_count(backend: Backend, project_id: int) -> int:
    with transaction(backend.sessions) as session:
        query = select(func.count()).select_from(DkimKey).where(DkimKey.project_id == project_id)
        return session.scalar(query) or 0


def dns_of(*records: tuple[str, str]) -> services.TxtLookup:
    """A DNS that publishes these (name, TXT value) records."""
    return lambda name: [value for at, value in records if at == name]


def test_a_key_signs_once_activated_after_its_record_is_published(
    backend: Backend, project: ApiProject, other_project: ApiProject
) -> None:
    with transaction(backend.sessions) as session:
        first, first_txt = services.create_dkim_key(
            session, project.id, "Example.COM.", "s1", "rsa"
        )
        assert (first.domain, first.selector, first.algorithm) == (
            "example.com",
            "s1",
            "rsa-sha256",
        )
        assert first_txt.startswith("v=DKIM1; k=rsa; p=")
        assert services.txt_value(first) == first_txt
        assert not first.active
    # Generated, not yet published: nothing signs (a signature no receiver can check
    # would fail DMARC).
    with transaction(backend.sessions) as session:
        assert services.dkim_signer(session, project.id, "example.com") is None
    missing = r"s1\._domainkey\.example\.com: no TXT record"
    with pytest.raises(Invalid, match=missing), transaction(backend.sessions) as session:
        services.activate_dkim_key(session, first.id, lookup=dns_of())
    with transaction(backend.sessions) as session:
        assert services.dkim_signer(session, project.id, "example.com") is None
        services.activate_dkim_key(
            session, first.id, lookup=dns_of(("s1._domainkey.example.com", first_txt))
        )
    with transaction(backend.sessions) as session:
        chosen = services.dkim_signer(session, project.id, "EXAMPLE.com")
        assert chosen is not None
        assert chosen.selector == "s1"
        assert services.dkim_signer(session, project.id, "other.example.com") is None
        assert services.dkim_signer(session, other_project.id, "example.com") is None
        assert services.dkim_signer(session, project.id, "not a domain") is None

    # Rotation: a new key does not sign until activated; then it alone signs.
    with transaction(backend.sessions) as session:
        newest, newest_txt = services.create_dkim_key(
            session, project.id, "example.com", "s2", "ed25519"
        )
    with transaction(backend.sessions) as session:
        still = services.dkim_signer(session, project.id, "example.com")
        assert still is not None
        assert still.selector == "s1"
    with (
        pytest.raises(Invalid, match="publishes another key"),
        transaction(backend.sessions) as session,
    ):
        services.activate_dkim_key(
            session, newest.id, lookup=dns_of(("s2._domainkey.example.com", first_txt))
        )
    with transaction(backend.sessions) as session:
        services.activate_dkim_key(
            session, newest.id, lookup=dns_of(("s2._domainkey.example.com", newest_txt))
        )
    with transaction(backend.sessions) as session:
        chosen = services.dkim_signer(session, project.id, "example.com")
        assert chosen is not None
        assert (chosen.selector, chosen.algorithm) == ("s2", "ed25519-sha256")
        signed = chosen.sign(MESSAGES["non-ascii"])
        listed = services.list_dkim_keys(session, project.id)
        assert [(key.selector, key.active) for key in listed] == [("s1", False), ("s2", True)]
    resolver = dns_for(newest_txt, "s2._domainkey.example.com.")
    assert dkim.verify(signed, dnsfunc=resolver)

    # Back to the first key, without a DNS check; then none.
    with transaction(backend.sessions) as session:
        services.activate_dkim_key(session, first.id, lookup=None)
    with transaction(backend.sessions) as session:
        again = services.dkim_signer(session, project.id, "example.com")
        assert again is not None
        assert again.selector == "s1"
        services.deactivate_dkim_key(session, first.id)
    with transaction(backend.sessions) as session:
        assert services.dkim_signer(session, project.id, "example.com") is None
    # Another project's key, or none: not found.
    for key_id, owner in ((first.id, other_project.id), (2**31 - 1, None), (2**40, None)):
        with pytest.raises(NotFound), transaction(backend.sessions) as session:
            services.activate_dkim_key(session, key_id, lookup=None, project_id=owner)
        with pytest.raises(NotFound), transaction(backend.sessions) as session:
            services.deactivate_dkim_key(session, key_id, project_id=owner)


def test_a_key_can_be_made_active_at_once(backend: Backend, project: ApiProject) -> None:
    with transaction(backend.sessions) as session:
        services.create_dkim_key(session, project.id, "example.com", "now", "rsa", active=True)
    with transaction(backend.sessions) as session:
        chosen = services.dkim_signer(session, project.id, "example.com")
        assert chosen is not None
        assert chosen.selector == "now"


def test_bad_keys_are_refused_and_leave_nothing(backend: Backend, project: ApiProject) -> None:
    with transaction(backend.sessions) as session:
        services.create_dkim_key(session, project.id, "example.com", "taken", "ed25519")
    cases: list[tuple[str, str, str, type[Exception], str]] = [
        ("example.com", "taken", "rsa", Conflict, "selector 'taken' already exists"),
        ("not a domain", "s", "rsa", Invalid, "is not a domain name"),
        ("example", "s", "rsa", Invalid, "is not a domain name"),
        ("example.com", "bad selector", "rsa", Invalid, "is not a DKIM selector"),
        ("example.com", "s" * 64, "rsa", Invalid, "is not a DKIM selector"),
        ("example.com", "s", "dsa", Invalid, "algorithm must be one of rsa, ed25519"),
    ]
    for domain, selector, algorithm, error, message in cases:
        with pytest.raises(error, match=message), transaction(backend.sessions) as session:
            services.create_dkim_key(session, project.id, domain, selector, algorithm)
    with pytest.raises(NotFound), transaction(backend.sessions) as session:
        services.create_dkim_key(session, 2**31 - 1, "example.com", "s", "rsa")
    assert _key_count(backend, project.id) == 1
    # A conflict inside a longer transaction rolls back only its own SAVEPOINT.
    with transaction(backend.sessions) as session:
        with pytest.raises(Conflict):
            services.create_dkim_key(session, project.id, "example.com", "taken", "rsa")
        services.create_dkim_key(session, project.id, "example.com", "fresh", "rsa")
    assert _key_count(backend, project.id) == 2


def test_compile_for_loads_the_projects_email(
    backend: Backend, project: ApiProject, other_project: ApiProject
) -> None:
    created = new_email(
        project,
        subject="Hi {{ first_name }}",
        text_html="<p>Hello {{ first_name }}</p>",
        subject_ru="Привет {{ first_name }}",
        text_html_ru="<p>Здравствуйте {{ first_name }}</p>",
    )
    context = MessageContext(project.id, None, None, "T", (), "bounces.example.com")
    with transaction(backend.sessions) as session:
        russian = services.compile_for(session, created["id"], "ru", context, LINKS)
        default = services.compile_for(session, created["id"], "fr", context, LINKS)
    assert russian.language == "ru"
    assert default.language == ""
    raw = russian.render(Recipient(1, "x@example.org", {"first_name": "Олег"}, {}))
    assert "Привет Олег".encode() not in raw  # encoded on the wire ...
    assert b"Subject: =?utf-8?b?" in raw  # ... as RFC 2047 words
    other = MessageContext(other_project.id, None, None, "T", (), "bounces.example.com")
    for email_id, ctx in ((created["id"], other), (2**31 - 1, context), (2**40, context)):
        with pytest.raises(NotFound), transaction(backend.sessions) as session:
            services.compile_for(session, email_id, None, ctx, LINKS)


# --- envoi dkim ... -----------------------------------------------------------------------

runner = CliRunner()


def test_cli_generates_lists_and_refuses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVOI_DATABASE_URL", sqlite_url(tmp_path))
    monkeypatch.setenv("ENVOI_VAR_DIR", str(tmp_path))
    created = runner.invoke(app, ["project", "create", "Shop"])
    assert created.exit_code == 0, created.output
    project_id = str(json.loads(created.output)["id"])

    result = runner.invoke(
        app, ["dkim", "generate", "example.com", "--project", project_id, "--selector", "mail"]
    )
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    assert record["name"] == "mail._domainkey.example.com"
    assert record["algorithm"] == "rsa-sha256"
    assert record["value"].startswith("v=DKIM1; k=rsa; p=")
    assert record["zone"].startswith('mail._domainkey.example.com. IN TXT ( "v=DKIM1; k=rsa; ')

    ed = runner.invoke(
        app, ["dkim", "generate", "example.org", "--project", project_id, "--algorithm", "ed25519"]
    )
    assert ed.exit_code == 0, ed.output
    assert json.loads(ed.output)["selector"].startswith("envoi")
    assert json.loads(ed.output)["value"].startswith("v=DKIM1; k=ed25519; p=")

    again = runner.invoke(
        app, ["dkim", "generate", "example.com", "--project", project_id, "--selector", "mail"]
    )
    assert again.exit_code == 1
    assert "selector 'mail' already exists for example.com" in again.output
    bad = runner.invoke(app, ["dkim", "generate", "example.com", "--project", "99"])
    assert bad.exit_code == 1
    assert "project 99 not found" in bad.output

    listed = runner.invoke(app, ["dkim", "list", "--project", project_id])
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.output)
    assert [(row["domain"], row["selector"], row["active"]) for row in rows] == [
        ("example.com", "mail", False),
        ("example.org", json.loads(ed.output)["selector"], False),
    ]
    assert rows[0]["value"] == record["value"]
    assert "PRIVATE" not in listed.output


def test_cli_activates_a_key_once_dns_publishes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENVOI_DATABASE_URL", sqlite_url(tmp_path))
    monkeypatch.setenv("ENVOI_VAR_DIR", str(tmp_path))
    created = runner.invoke(app, ["project", "create", "Shop"])
    project_id = str(json.loads(created.output)["id"])
    generated = runner.invoke(
        app, ["dkim", "generate", "example.com", "--project", project_id, "--selector", "s1"]
    )
    record = json.loads(generated.output)
    assert record["active"] is False
    key_id = str(record["id"])
    # The DNS of a real domain, as the resolver would answer (the only thing mocked).
    published: dict[str, list[str]] = {}
    monkeypatch.setattr(services, "lookup_txt", lambda name: published.get(name, []))

    refused = runner.invoke(app, ["dkim", "activate", key_id])
    assert refused.exit_code == 1
    assert "s1._domainkey.example.com: no TXT record is published there" in refused.output
    assert "or use --force" in refused.output
    published["s1._domainkey.example.com"] = [record["value"]]
    activated = runner.invoke(app, ["dkim", "activate", key_id])
    assert activated.exit_code == 0, activated.output
    assert json.loads(activated.output)["active"] is True
    listed = runner.invoke(app, ["dkim", "list", "--project", project_id])
    assert [row["active"] for row in json.loads(listed.output)] == [True]

    deactivated = runner.invoke(app, ["dkim", "deactivate", key_id])
    assert deactivated.exit_code == 0, deactivated.output
    assert json.loads(deactivated.output)["active"] is False
    published.clear()
    forced = runner.invoke(app, ["dkim", "activate", key_id, "--force"])
    assert forced.exit_code == 0, forced.output
    assert json.loads(forced.output)["active"] is True
    for command in ("activate", "deactivate"):
        missing = runner.invoke(app, ["dkim", command, "999"])
        assert missing.exit_code == 1
        assert "DKIM key 999 not found" in missing.output
