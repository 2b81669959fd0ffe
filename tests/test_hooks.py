"""The campaign hook against a real HTTP server on loopback: verdicts, parameters,
time limits, signatures, URL templates and the post-send report."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, Response

from envoi.spool.hooks import (
    SIGNATURE_HEADER,
    HookConfig,
    HookVerdict,
    hook_config,
    make_payload,
    post_send,
    pre_send,
    signature,
    verify,
)
from envoi.testing.server import ServerThread

API_KEY = "project-api-key-0123456789"
KEY_HASH = hashlib.sha256(API_KEY.encode()).hexdigest()


@dataclass
class Received:
    path: str
    raw_path: str
    query: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.body)
        return document


def _hook_app(received: list[Received]) -> FastAPI:
    app = FastAPI()

    @app.post("/{name}/{rest:path}")
    async def hook(name: str, rest: str, request: Request) -> Response:
        body = await request.body()
        raw_path = request.scope["raw_path"].decode()
        headers = dict(request.headers)
        received.append(Received(f"/{name}/{rest}", raw_path, request.url.query, headers, body))
        answers: dict[str, tuple[int, str]] = {
            "ok": (200, json.dumps({"params": {"coupon": "H1"}, "other": 1})),
            "whole": (201, json.dumps({"coupon": "W2", "greeting": "Hi"})),
            "empty": (204, ""),
            "text": (200, "fine by me"),
            "list": (200, "[1, 2]"),
            "badparams": (200, json.dumps({"params": [1]})),
            "deny": (403, "recipient opted out in the CRM"),
            "broken": (500, "Internal Server Error"),
            "redirect": (302, ""),
            "big": (200, json.dumps({"params": {"x": "y" * 300_000}})),
        }
        if name == "slow":
            await asyncio.sleep(3)
            return Response("late", 200)
        status, text = answers[name]
        location = {"Location": "/ok/"} if status == 302 else None
        return Response(text, status, headers=location, media_type="application/json")

    return app


@dataclass
class HookServer:
    base_url: str
    received: list[Received]

    def config(self, path: str, **extra: Any) -> HookConfig:
        values: dict[str, Any] = {"hook_url_template": f"{self.base_url}{path}", **extra}
        hook = hook_config(values, KEY_HASH)
        assert hook is not None
        return hook


@pytest.fixture(scope="module")
def hook_server() -> Iterator[HookServer]:
    received: list[Received] = []
    with ServerThread(_hook_app(received)) as base_url:
        yield HookServer(base_url, received)


@pytest.fixture
def server(hook_server: HookServer) -> HookServer:
    hook_server.received.clear()
    return hook_server


PAYLOAD = make_payload(
    post="S_12",
    message_id=7,
    send_id=345,
    email="ann+news@example.com",
    uid="42",
    profile={"uid": "42", "email": "ann+news@example.com", "first_name": "Ann & Co", "tier": 3},
    params={"coupon": "CSV-1", "city": "Zürich"},
)


def ask(hook: HookConfig, payload: dict[str, Any] = PAYLOAD) -> HookVerdict:
    async def call() -> HookVerdict:
        async with httpx.AsyncClient() as client:
            return await pre_send(client, hook, payload)

    return asyncio.run(call())


def tell(hook: HookConfig, payload: dict[str, Any]) -> None:
    async def call() -> None:
        async with httpx.AsyncClient() as client:
            await post_send(client, hook, payload)

    asyncio.run(call())


def test_no_template_no_hook() -> None:
    assert hook_config({}, KEY_HASH) is None
    assert hook_config({"hook_url_template": None, "hook_use_auth": True}, KEY_HASH) is None
    hook = hook_config(
        {"hook_url_template": "https://h.example/x", "hook_use_auth": True, "hook_pre_post": True},
        KEY_HASH,
    )
    assert hook == HookConfig("https://h.example/x", True, True, KEY_HASH)


def test_a_2xx_allows_and_adds_its_params(server: HookServer) -> None:
    verdict = ask(server.config("/ok/"))
    assert verdict == HookVerdict(True, {"coupon": "H1"}, "hook answered 200")
    [request] = server.received
    assert request.headers["content-type"] == "application/json"
    assert SIGNATURE_HEADER.lower() not in request.headers  # hook_use_auth is off
    assert request.json == {
        "stage": "pre",
        "post": "S_12",
        "message_id": 7,
        "send_id": 345,
        "email": "ann+news@example.com",
        "uid": "42",
        "profile": PAYLOAD["profile"],
        "params": PAYLOAD["params"],
    }


@pytest.mark.parametrize(
    ("path", "params", "note"),
    [
        ("/whole/", {"coupon": "W2", "greeting": "Hi"}, ""),
        ("/empty/", {}, ""),
        ("/text/", {}, " (not JSON: no parameters)"),
        ("/list/", {}, " (not a JSON object: no parameters)"),
        ("/badparams/", {}, " (params is not an object: ignored)"),
    ],
)
def test_what_a_2xx_answer_may_hold(
    server: HookServer, path: str, params: dict[str, Any], note: str
) -> None:
    verdict = ask(server.config(path))
    assert verdict.allowed
    assert verdict.params == params
    assert verdict.detail.endswith(note)


@pytest.mark.parametrize(
    ("path", "detail"),
    [
        ("/deny/", "hook answered 403: recipient opted out in the CRM"),
        ("/broken/", "hook answered 500: Internal Server Error"),
        ("/redirect/", "hook answered 302: (empty)"),
        ("/big/", "hook answer is larger than 262144 bytes"),
    ],
)
def test_anything_else_refuses(server: HookServer, path: str, detail: str) -> None:
    assert ask(server.config(path)) == HookVerdict(False, {}, detail)


def test_a_slow_hook_refuses_at_the_time_limit(server: HookServer) -> None:
    hook = replace(server.config("/slow/"), timeout=0.3)
    began = time.monotonic()
    verdict = ask(hook)
    assert time.monotonic() - began < 2
    assert verdict == HookVerdict(False, {}, "hook did not answer within 0.3 s")


def test_an_unreachable_hook_refuses() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens once closed
    hook = hook_config({"hook_url_template": f"http://127.0.0.1:{port}/x"}, KEY_HASH)
    assert hook is not None
    verdict = ask(hook)
    assert not verdict.allowed
    assert verdict.detail.startswith("hook call failed: ConnectError")


def test_the_url_is_rendered_per_recipient(server: HookServer) -> None:
    template = "/ok/{{ email }}?post={post}&name={{ first_name }}&coupon={{ coupon }}&t={{ tier }}"
    assert ask(server.config(template)).allowed
    [request] = server.received
    assert request.path == "/ok/ann+news@example.com"
    assert request.query == "post=S_12&name=Ann%20%26%20Co&coupon=CSV-1&t=3"
    assert server.received[0].raw_path == "/ok/ann%2Bnews%40example.com"
    # The values are encoded: a recipient's data cannot add to the query.
    hostile = {**PAYLOAD, "email": "x@example.com&admin=1#"}
    assert ask(server.config("/ok/?to={{ email }}"), hostile).allowed
    assert server.received[-1].query == "to=x%40example.com%26admin%3D1%23"


def test_the_host_never_comes_from_recipient_data(server: HookServer) -> None:
    for template in ("http://{{ host }}/hook", "https://h.example:{port}/x", "{{ s }}://h/x"):
        hook = hook_config({"hook_url_template": template}, KEY_HASH)
        assert hook is not None
        verdict = ask(hook, {**PAYLOAD, "host": server.base_url.removeprefix("http://")})
        assert verdict == HookVerdict(
            False,
            {},
            "hook URL cannot be rendered: placeholders are only allowed after the host",
        )
    assert server.received == []


def test_a_template_the_sandbox_refuses(server: HookServer) -> None:
    hook = server.config("/ok/{{ email.__class__.__mro__ }}")
    verdict = ask(hook)
    assert not verdict.allowed
    assert verdict.detail.startswith("hook URL cannot be rendered")
    assert server.received == []


def test_signed_calls(server: HookServer) -> None:
    hook = server.config("/ok/", hook_use_auth=True)
    assert ask(hook).allowed
    [request] = server.received
    header = request.headers[SIGNATURE_HEADER.lower()]
    timestamp = int(header.split(",")[0].removeprefix("t="))
    assert abs(time.time() - timestamp) < 60
    assert header == signature(KEY_HASH, request.body, timestamp)
    # What a receiver does with the API key it holds:
    assert verify(header, request.body, API_KEY, time.time())
    assert not verify(header, request.body + b" ", API_KEY, time.time())
    assert not verify(header, request.body, "another-key", time.time())
    assert not verify(header, request.body, API_KEY, time.time() + 3600)  # replayed later
    assert not verify("v1=abc", request.body, API_KEY, time.time())


def test_post_send_reports_the_outcome_only_with_hook_pre_post(server: HookServer) -> None:
    report = {**PAYLOAD, "result": "delivered", "smtp_code": 250}
    tell(server.config("/ok/"), report)
    assert server.received == []
    tell(server.config("/ok/", hook_pre_post=True, hook_use_auth=True), report)
    [request] = server.received
    assert request.json["stage"] == "post"
    assert (request.json["result"], request.json["smtp_code"]) == ("delivered", 250)
    assert verify(request.headers[SIGNATURE_HEADER.lower()], request.body, API_KEY, time.time())


def test_post_send_failures_are_logged_and_ignored(
    server: HookServer, caplog: pytest.LogCaptureFixture
) -> None:
    report = {**PAYLOAD, "result": "permfail", "smtp_code": 550}
    with caplog.at_level(logging.WARNING, logger="envoi.spool.hooks"):
        tell(server.config("/broken/", hook_pre_post=True), report)
        tell(replace(server.config("/slow/", hook_pre_post=True), timeout=0.2), report)
    messages = [r.getMessage() for r in caplog.records if r.name == "envoi.spool.hooks"]
    assert messages == [
        "post-send hook answered 500: Internal Server Error",
        "post-send hook failed: hook did not answer within 0.2 s",
    ]
