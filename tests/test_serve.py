"""`envoi serve` as a user runs it: a real process on the embedded defaults."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ENVOI = Path(sys.executable).parent / "envoi"


@dataclass
class Served:
    base_url: str
    env: dict[str, str]
    process: subprocess.Popen[str]
    var_dir: Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    port = _free_port()
    var_dir = tmp_path / "var"
    env = {
        **os.environ,
        "ENVOI_VAR_DIR": str(var_dir),
        "ENVOI_DATABASE_URL": f"sqlite:///{var_dir}/envoi.db",
        "ENVOI_HTTP_LISTEN": f"127.0.0.1:{port}",
    }
    process = subprocess.Popen(  # noqa: S603 - our own console script
        [str(ENVOI), "serve"], env=env, stderr=subprocess.PIPE, text=True
    )
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{base_url}/api/v1/health").status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            raise RuntimeError(f"envoi serve did not start: {process.communicate()[1]}")
        time.sleep(0.1)
    yield Served(base_url, env, process, var_dir)
    if process.poll() is None:
        process.terminate()
        process.communicate(timeout=10)
    if process.stderr is not None:
        process.stderr.close()


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
