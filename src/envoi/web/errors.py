"""Map domain errors onto the native API's error shape: `{"detail": ...}` like FastAPI's own."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from envoi.core.errors import EnvoiError, Invalid, Unauthorized


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

    app.add_exception_handler(EnvoiError, handle)
