"""A campaign's HTTP hook (`hook_url_template`): asked before each send, told after.

Before each message (`pre_send`) envoi POSTs JSON to the hook URL:

    {"stage": "pre", "post": "S_12", "message_id": 7, "send_id": 345,
     "email": "ann@example.com", "uid": "42", "profile": {...}, "params": {...}}

A 2xx answer lets the message go; a JSON object in it adds personalisation
parameters: its `"params"` object, or the whole object when it has no `"params"` key.
Any other status, no answer within `HookConfig.timeout` (5 s, the whole exchange),
or any error refuses the message: the worker records it `blocked` with reason
`external_check`. With `hook_pre_post` the hook is also told the outcome after the
send (`post_send`, stage "post", with `result` and `smtp_code`); its failures are
logged and ignored.

The URL is a template rendered per recipient: `{{ name }}` (the Jinja2 sandbox of
emails, `envoi.emails.templates.make_environment`) or `{name}`, over the profile's
fields, the recipient's parameters and the payload's keys. Every value is
URL-encoded (`@` and `/` too), and placeholders may only follow the host, so a
recipient's data never changes where the request goes (no request forgery through a
profile field).

With `hook_use_auth` each request carries `X-Envoi-Signature: t=UNIX,v1=HEX`, HEX
the hex HMAC-SHA256 of `f"{t}.{body}"` (body: the exact bytes POSTed) keyed with the
project's API key hash: the lower-case hex SHA-256 of the project's API key, which
the receiver computes from the key it already holds (`verify` does it all). The
timestamp lets the receiver refuse replays.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import re
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import quote

import httpx
from jinja2 import Template, TemplateError

from envoi.emails.templates import make_environment

log = logging.getLogger("envoi.spool.hooks")

HOOK_TIMEOUT = 5.0  # seconds for the whole exchange, connection to last byte
MAX_ANSWER_BYTES = 256 * 1024
SIGNATURE_HEADER = "X-Envoi-Signature"
SIGNATURE_TOLERANCE = 300  # seconds a receiver should accept a signature's timestamp
_SINGLE_BRACES = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class HookConfig:
    url_template: str
    use_auth: bool
    # Also call the hook after the send (seed 002's hook_pre_post).
    pre_post: bool
    # The project's api_key_hash: the HMAC key of signed calls.
    signing_key: str
    timeout: float = HOOK_TIMEOUT

    def url(self, variables: dict[str, Any]) -> str:
        """The URL for one recipient. ValueError if its scheme or host would come from
        the recipient's data; TemplateError (a sandbox SecurityError is one) if the
        template cannot render."""
        if "{" in _origin(self.url_template):
            raise ValueError("placeholders are only allowed after the host")
        rendered = _compile(self.url_template).render(variables)
        return _SINGLE_BRACES.sub(
            lambda m: _quote(variables[m.group(1)]) if m.group(1) in variables else m.group(0),
            rendered,
        )


@dataclass(frozen=True)
class HookVerdict:
    allowed: bool
    params: dict[str, Any]
    detail: str


def hook_config(campaign_config: dict[str, Any], api_key_hash: str) -> HookConfig | None:
    """The campaign's hook, or None when it has none."""
    template = campaign_config.get("hook_url_template")
    if not template:
        return None
    return HookConfig(
        url_template=str(template),
        use_auth=bool(campaign_config.get("hook_use_auth")),
        pre_post=bool(campaign_config.get("hook_pre_post")),
        signing_key=api_key_hash,
    )


def make_payload(
    *,
    post: str | None,
    message_id: int,
    send_id: int,
    email: str,
    uid: str | None,
    profile: dict[str, Any],
    params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON a hook receives about one message (`stage` is added by the call)."""
    return {
        "post": post,
        "message_id": message_id,
        "send_id": send_id,
        "email": email,
        "uid": uid,
        "profile": profile,
        "params": params or {},
    }


def signature(key: str, body: bytes, timestamp: int) -> str:
    """The X-Envoi-Signature value of `body` sent at `timestamp`."""
    mac = hmac.new(key.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(
    header: str, body: bytes, api_key: str, now: float, tolerance: int = SIGNATURE_TOLERANCE
) -> bool:
    """What a hook receiver does: check the signature with the project's API key."""
    parts = dict(item.split("=", 1) for item in header.split(",") if "=" in item)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance:
        return False
    key = hashlib.sha256(api_key.encode()).hexdigest()
    expected = signature(key, body, timestamp)
    return hmac.compare_digest(expected.encode(), header.strip().encode())


async def pre_send(
    client: httpx.AsyncClient, hook: HookConfig, payload: dict[str, Any]
) -> HookVerdict:
    """Ask the hook whether this message may go, and with which extra parameters."""
    body = {**payload, "stage": "pre"}
    try:
        status, answer = await _call(client, hook, body)
    except _HookFailure as exc:
        return HookVerdict(False, {}, str(exc))
    if not 200 <= status < 300:
        return HookVerdict(False, {}, f"hook answered {status}: {_excerpt(answer)}")
    params, note = _params_of(answer)
    return HookVerdict(True, params, f"hook answered {status}{note}")


async def post_send(client: httpx.AsyncClient, hook: HookConfig, payload: dict[str, Any]) -> None:
    """Tell the hook what happened (only with `hook_pre_post`); failures are only logged."""
    if not hook.pre_post:
        return
    body = {**payload, "stage": "post"}
    try:
        status, answer = await _call(client, hook, body)
    except _HookFailure as exc:
        log.warning("post-send hook failed: %s", exc, extra={"send_id": body.get("send_id")})
        return
    if not 200 <= status < 300:
        log.warning(
            "post-send hook answered %s: %s",
            status,
            _excerpt(answer),
            extra={"send_id": body.get("send_id")},
        )


class _HookFailure(Exception):
    """No usable answer: the URL, the connection, the time limit or the size."""


async def _call(
    client: httpx.AsyncClient, hook: HookConfig, body: dict[str, Any]
) -> tuple[int, bytes]:
    try:
        url = hook.url(_variables(body))
    except (TemplateError, KeyError, TypeError, ValueError) as exc:
        raise _HookFailure(f"hook URL cannot be rendered: {exc}") from None
    content = json.dumps(body, separators=(",", ":"), default=str).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "envoi-hook/1"}
    if hook.use_auth:
        headers[SIGNATURE_HEADER] = signature(hook.signing_key, content, int(time.time()))
    try:
        async with asyncio.timeout(hook.timeout):
            return await _exchange(client, url, content, headers, hook.timeout)
    except (TimeoutError, httpx.TimeoutException):
        raise _HookFailure(f"hook did not answer within {hook.timeout:g} s") from None
    except (httpx.HTTPError, httpx.InvalidURL, OSError) as exc:
        raise _HookFailure(f"hook call failed: {type(exc).__name__}: {exc}") from None


async def _exchange(
    client: httpx.AsyncClient, url: str, content: bytes, headers: dict[str, str], timeout: float
) -> tuple[int, bytes]:
    async with client.stream(
        "POST", url, content=content, headers=headers, timeout=timeout
    ) as response:
        answer = bytearray()
        async for chunk in response.aiter_bytes():
            answer += chunk
            if len(answer) > MAX_ANSWER_BYTES:
                raise _HookFailure(f"hook answer is larger than {MAX_ANSWER_BYTES} bytes")
        return response.status_code, bytes(answer)


def _variables(body: dict[str, Any]) -> dict[str, Any]:
    """Profile fields, then the recipient's parameters, then the payload's own keys."""
    profile = body.get("profile") or {}
    params = body.get("params") or {}
    return {**profile, **params, **body}


def _params_of(answer: bytes) -> tuple[dict[str, Any], str]:
    if not answer.strip():
        return {}, ""
    try:
        document = json.loads(answer)
    except ValueError:
        return {}, " (not JSON: no parameters)"
    if not isinstance(document, dict):
        return {}, " (not a JSON object: no parameters)"
    params = document.get("params", document)
    if not isinstance(params, dict):
        return {}, " (params is not an object: ignored)"
    return params, ""


def _excerpt(answer: bytes) -> str:
    text = answer[:200].decode("utf-8", "replace")
    return " ".join(text.split()) or "(empty)"


def _quote(value: Any) -> str:
    # Nothing is safe, `@` included: a value is data, never URL syntax.
    return "" if value is None else quote(str(value), safe="")


def _origin(url_template: str) -> str:
    """`scheme://host:port` of the template: what decides where the request goes."""
    scheme, separator, rest = url_template.partition("://")
    return scheme + separator + re.split(r"[/?#]", rest, maxsplit=1)[0]


@lru_cache(maxsize=256)
def _compile(url_template: str) -> Template:
    # The email sandbox, not autoescaped HTML ("subject" kind), whose every printed
    # value is URL-encoded.
    environment = make_environment("subject")
    environment.finalize = _quote
    return environment.from_string(url_template)
