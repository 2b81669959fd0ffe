"""`envoi router add|set|remove|list`: the operator's side of routers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from envoi.cli import app
from envoi.db.session import make_engine, make_sessionmaker, transaction
from envoi.projects.services import create_project
from envoi.routers import services
from envoi.routers.models import Router, RoutingRule
from envoi.testing.databases import sqlite_url


def test_router_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = sqlite_url(tmp_path)
    monkeypatch.setenv("ENVOI_DATABASE_URL", url)
    monkeypatch.setenv("ENVOI_VAR_DIR", str(tmp_path))
    runner = CliRunner()
    assert runner.invoke(app, ["router", "list"]).output.strip() == "[]"  # migrates first
    engine = make_engine(url)
    with transaction(make_sessionmaker(engine)) as session:
        project_id = create_project(session, "Shop").id
    engine.dispose()
    secret = tmp_path / "password"
    secret.write_text("pw\n")

    added = runner.invoke(
        app,
        [
            "router", "add", "relay", "--kind", "smtp", "--project", str(project_id),
            "--host", "smtp.example.net", "--port", "2525", "--tls", "none",
            "--username", "shop", "--password-file", str(secret), "--max-connections", "4",
            "--messages-per-second", "50", "--default",
            "--config", '{"allow_plaintext_auth": true, "data_timeout": 900}',
        ],
    )  # fmt: skip
    assert added.exit_code == 0, added.output
    relay = json.loads(added.output)
    assert relay["config"] == {
        "host": "smtp.example.net",
        "port": 2525,
        "tls": "none",
        "allow_plaintext_auth": True,
        "username": "shop",
        "data_timeout": 900.0,
        "max_connections": 4,
        "messages_per_second": 50.0,
        "password_set": True,
    }
    assert relay["is_default"] is True
    shared = runner.invoke(
        app, ["router", "add", "ops", "--kind", "mx", "--shared", "--allow-private-network"]
    )
    assert shared.exit_code == 0, shared.output
    ops = json.loads(shared.output)
    assert (ops["shared"], ops["config"]) == (True, {"allow_private_network": True})

    listed = json.loads(runner.invoke(app, ["router", "list"]).output)
    assert [r["name"] for r in listed] == ["relay", "ops"]
    seen = runner.invoke(app, ["router", "list", "--project", str(project_id)]).output
    assert [r["name"] for r in json.loads(seen)] == ["relay", "ops"]
    assert "pw" not in seen

    for args in (
        ["router", "add", "x", "--kind", "smtp", "--shared"],  # no host
        ["router", "add", "x", "--kind", "capture"],  # neither --project nor --shared
        ["router", "add", "x", "--kind", "capture", "--project", "999"],
        ["router", "add", "relay", "--kind", "capture", "--project", str(project_id)],
        ["router", "add", "x", "--kind", "smtp", "--shared", "--host", "h", "--config", "[1]"],
        ["router", "add", "x", "--kind", "smtp", "--shared", "--host", "h", "--config", "{"],
        [
            "router", "add", "x", "--kind", "smtp", "--shared", "--host", "h",
            "--password-file", str(tmp_path / "missing"),
        ],
        ["router", "set", "999", "--port", "25"],
        ["router", "set", str(relay["id"]), "--port", "0"],
        ["router", "remove", "999"],
    ):  # fmt: skip
        result = runner.invoke(app, args)
        assert result.exit_code == 1, args
        assert "error:" in result.output, args
    port = runner.invoke(app, ["router", "set", str(relay["id"]), "--port", "0"]).output
    assert "error: config.port:" in port
    assert len(json.loads(runner.invoke(app, ["router", "list"]).output)) == 2

    # `set` changes what it is given, and keeps the rest, the password included.
    changed = runner.invoke(
        app,
        [
            "router", "set", str(ops["id"]), "--name", "direct", "--port", "2525",
            "--no-allow-private-network",
        ],
    )  # fmt: skip
    assert changed.exit_code == 0, changed.output
    assert (json.loads(changed.output)["name"], json.loads(changed.output)["config"]) == (
        "direct",
        {"port": 2525},
    )
    moved = runner.invoke(
        app, ["router", "set", str(relay["id"]), "--host", "smtp2.example.net", "--no-default"]
    )
    assert moved.exit_code == 0, moved.output
    assert json.loads(moved.output)["config"]["password_set"] is True
    assert json.loads(moved.output)["is_default"] is False
    piped = runner.invoke(
        app, ["router", "set", str(relay["id"]), "--password-file", "-"], input="new\n"
    )
    assert piped.exit_code == 0, piped.output
    cleared = runner.invoke(app, ["router", "set", str(relay["id"]), "--clear-password"])
    assert json.loads(cleared.output)["config"]["password_set"] is False
    engine = make_engine(url)
    with transaction(make_sessionmaker(engine)) as session:
        stored = session.get_one(Router, relay["id"]).config
        rule = services.create_rule(session, project_id, router_id=ops["id"])
    assert "password" not in stored

    # `remove` takes any router, shared ones included, and the rules that use them.
    removed = runner.invoke(app, ["router", "remove", str(ops["id"])])
    assert removed.exit_code == 0, removed.output
    with transaction(make_sessionmaker(engine)) as session:
        assert session.get(RoutingRule, rule.id) is None
        assert [r.name for r in session.scalars(select(Router))] == ["relay"]
    engine.dispose()
