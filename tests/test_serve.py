"""`envoi serve` as a user runs it: a real process on the embedded defaults."""

from __future__ import annotations

import json
import subprocess

import httpx

from tests.conftest import ENVOI, Served


def test_serve_migrates_generates_a_key_and_answers(served: Served) -> None:
    assert (served.var_dir / "envoi.db").exists()
    assert len((served.var_dir / "secret_key").read_text().strip()) >= 32

    created = subprocess.run(  # noqa: S603 - our own console script
        [str(ENVOI), "project", "create", "Demo", "--login", "demo", "--secret", "demo-secret"],
        env=served.env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(created.stdout)["login"] == "demo"
    answer = httpx.post(
        f"{served.base_url}/api/v1/categories", auth=("demo", "demo-secret"), json={"title": "News"}
    )
    assert answer.status_code == 201
    assert answer.json()["title"] == "News"


def test_serve_logs_json_lines_and_exposes_metrics(served: Served) -> None:
    httpx.get(f"{served.base_url}/api/v1/categories")  # 401, still counted
    metrics = httpx.get(f"{served.base_url}/metrics").text
    assert (
        'envoi_http_requests_total{method="GET",route="/api/v1/categories",status="401"} 1.0'
        in (metrics)
    )
    assert "envoi_http_request_duration_seconds_bucket" in metrics
    served.process.terminate()
    _, stderr = served.process.communicate(timeout=10)
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    requests = [line for line in lines if line["msg"] == "request"]
    assert any(r["route"] == "/api/v1/categories" and r["status"] == 401 for r in requests)
    assert any(line["msg"] == "serving" for line in lines)
