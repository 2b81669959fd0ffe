"""Map domain errors onto the native API's error shape: `{"detail": ...}` like FastAPI's own."""

from __future__ import annotations

import logging
from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from envoi.core.errors import EnvoiError, Invalid, Unauthorized

log = logging.getLogger("envoi.http")


def envoi_error_response(exc: EnvoiError) -> JSONResponse:
    if isinstance(exc, Invalid):
        detail: object = [{"loc": exc.loc, "msg": exc.message, "type": "value_error"}]
    else:
        detail = exc.message
    headers = {"WWW-Authenticate": 'Basic realm="envoi"'} if isinstance(exc, Unauthorized) else None
    return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    async def handle(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, EnvoiError)  # noqa: S101 - registered for EnvoiError only
        return envoi_error_response(exc)

    async def handle_integrity(_request: Request, exc: Exception) -> JSONResponse:
        # Services check uniqueness before they write; a unique or foreign key that
        # still fails means another request won a race for the same rows. Nothing of
        # this request was committed, so the client may simply retry.
        log.warning("integrity conflict", extra={"error": str(exc)[:300]})
        return JSONResponse(
            {"detail": "a concurrent request changed the same rows; retry"}, status_code=409
        )

    app.add_exception_handler(EnvoiError, handle)
    app.add_exception_handler(IntegrityError, handle_integrity)


class BodyTooLarge(EnvoiError):
    status_code = 413


class BodyLimitMiddleware:
    """Refuse request bodies over `limit` bytes with a 413 in the API's error shape.

    A declared Content-Length over the limit is refused before anything is read; a
    chunked body is cut off as soon as its bytes pass the limit (the error is raised
    from `receive`, inside the app, so the usual handlers answer it). Routes for which
    `exempt(scope)` is true enforce limits of their own (file uploads).
    """

    def __init__(self, app: ASGIApp, limit: int, exempt: Callable[[Scope], bool]) -> None:
        self.app = app
        self.limit = limit
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.exempt(scope):
            await self.app(scope, receive, send)
            return
        message = f"the request body exceeds {self.limit} bytes"
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await envoi_error_response(BodyTooLarge(message))(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            incoming = await receive()
            received += len(incoming.get("body", b""))
            if received > self.limit:
                raise BodyTooLarge(message)
            return incoming

        await self.app(scope, counting_receive, send)
