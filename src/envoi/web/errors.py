"""Map domain errors onto the native API's error shape: `{"detail": ...}` like FastAPI's own."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError

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
