"""The `envoi` command: projects are created, listed, restricted and rotated from the shell."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from envoi.cli import app
from envoi.config import Settings
from envoi.db.session import make_engine
from envoi.testing.databases import sqlite_url
from envoi.testing.server import ServerThread
from envoi.web.app import create_app

runner = CliRunner()


@pytest.fixture
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = sqlite_url(tmp_path)
    monkeypatch.setenv("ENVOI_DATABASE_URL", url)
    monkeypatch.setenv("ENVOI_VAR_DIR", str(tmp_path))
    return url


def invoke(*args: str) -> object:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_project_create_prints_working_credentials(database: str) -> None:
    created = invoke("project", "create", "Shop", "--login", "shop", "--secret", "s3cret-value")
    assert isinstance(created, dict)
    assert created["login"] == "shop"
    assert created["secret"] == "s3cret-value"
    assert len(created["api_key"]) >= 32
    assert len(created["access_token"]) >= 32

    engine = make_engine(database)
    with ServerThread(create_app(Settings(database_url=database), engine)) as base_url:
        ok = httpx.get(f"{base_url}/api/v1/categories", auth=("shop", "s3cret-value"))
        assert ok.status_code == 200
        rotated = invoke("project", "rotate-secret", str(created["id"]))
        assert isinstance(rotated, dict)
        old = httpx.get(f"{base_url}/api/v1/categories", auth=("shop", "s3cret-value"))
        assert old.status_code == 401
        new = httpx.get(f"{base_url}/api/v1/categories", auth=("shop", rotated["secret"]))
        assert new.status_code == 200

        invoke("project", "allow-ip", str(created["id"]), "192.0.2.0/24")
        blocked = httpx.get(f"{base_url}/api/v1/categories", auth=("shop", rotated["secret"]))
        assert blocked.status_code == 403
        invoke("project", "allow-ip", str(created["id"]))
        again = httpx.get(f"{base_url}/api/v1/categories", auth=("shop", rotated["secret"]))
        assert again.status_code == 200
    engine.dispose()


@pytest.mark.usefixtures("database")
def test_generated_secret_and_login() -> None:
    created = invoke("project", "create", "My Shop")
    assert isinstance(created, dict)
    assert created["login"].startswith("my-shop-")
    assert len(created["secret"]) >= 24


@pytest.mark.usefixtures("database")
def test_project_list_hides_secrets() -> None:
    invoke("project", "create", "A", "--login", "alpha", "--allow-ip", "10.0.0.1")
    listed = invoke("project", "list")
    assert listed == [{"id": 1, "name": "A", "login": "alpha", "allowed_ips": ["10.0.0.1/32"]}]


@pytest.mark.usefixtures("database")
def test_errors_are_clear_and_exit_non_zero() -> None:
    invoke("project", "create", "A", "--login", "alpha")
    taken = runner.invoke(app, ["project", "create", "B", "--login", "alpha"])
    assert taken.exit_code == 1
    assert "login 'alpha' is taken" in taken.output
    bad_ip = runner.invoke(app, ["project", "create", "C", "--allow-ip", "not-an-ip"])
    assert bad_ip.exit_code == 1
    assert "not an IP address" in bad_ip.output
    missing = runner.invoke(app, ["project", "rotate-secret", "99"])
    assert missing.exit_code == 1
    assert "project 99 not found" in missing.output
    assert invoke("project", "list") == [
        {"id": 1, "name": "A", "login": "alpha", "allowed_ips": []}
    ]


@pytest.mark.usefixtures("database")
def test_db_upgrade() -> None:
    result = runner.invoke(app, ["db", "upgrade"])
    assert result.exit_code == 0
    assert "database at head" in result.output


@pytest.mark.usefixtures("database")
def test_project_bounce_domain_is_set_checked_and_cleared() -> None:
    created = invoke("project", "create", "Shop")
    assert isinstance(created, dict)
    project_id = str(created["id"])
    assert invoke("project", "bounce-domain", project_id, "Bounces.Example.COM.") == {
        "id": created["id"],
        "bounce_domain": "bounces.example.com",
    }
    refused = runner.invoke(app, ["project", "bounce-domain", project_id, "not a domain"])
    assert refused.exit_code == 1
    assert "is not a domain name" in refused.output
    # Cleared: the operator's ENVOI_BOUNCE_DOMAIN applies again.
    assert invoke("project", "bounce-domain", project_id) == {
        "id": created["id"],
        "bounce_domain": "localhost",
    }
