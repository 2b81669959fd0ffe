"""Domain errors raised by services; each API surface maps them onto its own error shape."""

from __future__ import annotations

from collections.abc import Sequence


class EnvoiError(Exception):
    """Base of every error a client caused and should be told about."""

    status_code = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(EnvoiError):
    status_code = 404


class Conflict(EnvoiError):
    """The request is valid but the resource's state forbids it (an archived campaign ...)."""

    status_code = 409


class Invalid(EnvoiError):
    """A value in the request is wrong; `loc` names it the way FastAPI's 422 errors do."""

    status_code = 422

    def __init__(self, message: str, loc: Sequence[str | int] = ("body",)) -> None:
        super().__init__(message)
        self.loc = list(loc)


class Unauthorized(EnvoiError):
    status_code = 401


class Forbidden(EnvoiError):
    status_code = 403


class TooManyRequests(EnvoiError):
    status_code = 429
