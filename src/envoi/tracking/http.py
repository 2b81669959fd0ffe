"""Raw ASGI requests and answers for the tracking endpoints.

The endpoints answer in the ASGI callable itself, not through Starlette's Request
and Response classes: an open or a click is a few header look-ups and one or two
`send` calls, and at thousands of hits a second the framework's objects cost more
than the work (see `tracking.api`). The form bodies of the rare POSTs still go
through Starlette's parser (multipart included).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl, quote

from starlette.formparsers import MultiPartException
from starlette.requests import ClientDisconnect, Request
from starlette.types import Message, Receive, Scope, Send

from envoi.tracking import pages

BODY_LIMIT = 64 << 10  # bytes of a tracking POST body (a form, a goal)
NO_CACHE = b"no-store, no-cache, must-revalidate, private"
# Every HTML page: never cached, never indexed, never framed by another site (the forms
# would otherwise be clickjacking targets), and no Referer to the sites it links to
# (its URL holds the recipient's token).
_PAGE_HEADERS = [
    (b"content-type", b"text/html; charset=utf-8"),
    (b"cache-control", NO_CACHE),
    (b"x-robots-tag", b"noindex, nofollow"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy", b"frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
]
_PIXEL_HEADERS = [
    (b"content-type", b"image/gif"),
    (b"content-length", str(len(pages.PIXEL)).encode()),
    (b"cache-control", NO_CACHE),
    (b"pragma", b"no-cache"),
    (b"expires", b"Thu, 01 Jan 1970 00:00:00 GMT"),
]
_JSON = (b"content-type", b"application/json")
# Characters left as they are in a Location header: those of a URL. Anything else (a
# space, a control character, non-ASCII) is percent-encoded, so a target can never
# break the header.
_LOCATION_SAFE = "!#$%&'()*+,-./:;=?@[]_~"


class BodyTooLarge(Exception):
    pass


def header(scope: Scope, name: bytes) -> str:
    """The first value of request header `name` (lower case), "" when absent."""
    for key, value in scope["headers"]:
        if key == name:
            text: str = value.decode("latin-1")
            return text
    return ""


def client_address(scope: Scope) -> str | None:
    """The client's address as the server gives it: uvicorn puts the socket peer there,
    or, when the peer is one of its trusted proxies (`FORWARDED_ALLOW_IPS`), the
    nearest untrusted address of `X-Forwarded-For`."""
    client = scope.get("client")
    return str(client[0]) if client else None


async def read_body(receive: Receive, limit: int = BODY_LIMIT) -> bytes:
    """The request body; BodyTooLarge past `limit` bytes, ClientDisconnect if the
    client left."""
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def read_form(scope: Scope, body: bytes) -> dict[str, str] | None:
    """The text fields of the form in `body`: multipart when the Content-Type says so,
    else URL-encoded whatever it says (a one-click POST is sometimes sent without a
    Content-Type); None when a multipart body cannot be read."""
    if not header(scope, b"content-type").lower().startswith("multipart/"):
        return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(scope, replay).form(max_files=0, max_fields=20)
    except (MultiPartException, ValueError, ClientDisconnect):
        return None
    return {key: value for key, value in form.multi_items() if isinstance(value, str)}


def location(url: str) -> bytes:
    return quote(url, safe=_LOCATION_SAFE).encode("ascii")


async def answer(
    send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes = b""
) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def pixel(send: Send, method: str) -> None:
    await answer(send, 200, _PIXEL_HEADERS, b"" if method == "HEAD" else pages.PIXEL)


async def redirect(send: Send, url: str) -> None:
    headers = [
        (b"location", location(url)),
        (b"cache-control", NO_CACHE),
        (b"content-length", b"0"),
    ]
    await answer(send, 302, headers)


async def html(send: Send, status: int, page: str, method: str = "GET") -> None:
    body = page.encode()
    headers = [*_PAGE_HEADERS, (b"content-length", str(len(body)).encode())]
    await answer(send, status, headers, b"" if method == "HEAD" else body)


async def not_found(send: Send, method: str = "GET") -> None:
    await html(send, 404, pages.NOT_FOUND, method)


async def unavailable(send: Send) -> None:
    headers = [*_PAGE_HEADERS, (b"retry-after", b"1")]
    await answer(send, 503, headers, pages.UNAVAILABLE.encode())


async def not_allowed(send: Send, allow: bytes) -> None:
    await answer(send, 405, [(b"allow", allow), (b"content-length", b"0")])


async def json_answer(
    send: Send,
    status: int,
    document: Any = None,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    body = b"" if document is None else json.dumps(document).encode()
    headers = [(b"cache-control", NO_CACHE), *(extra or [])]
    if document is not None:
        headers += [_JSON, (b"content-length", str(len(body)).encode())]
    await answer(send, status, headers, body)
