"""The JSON-RPC envelope of the `/api/1.5/` surface (seed 001), both versions of the spec.

Seed 001's API speaks JSON-RPC 1.0 and 2.0 (with batches and notifications), and its
documentation shows only what sits inside the envelope: the `result` value, and the
`error` object `{"code": -1, "message": "..."}`. So a request is answered in its own
version:

- 2.0 (`"jsonrpc": "2.0"`): `{"jsonrpc": "2.0", "result": ..., "id": ...}` or
  `{"jsonrpc": "2.0", "error": {...}, "id": ...}`; a request without `id` is a
  notification and gets no answer; a batch (an array) gets an array.
- 1.0 (no `jsonrpc` member): `{"result": ..., "error": null, "id": ...}` or
  `{"result": null, "error": {...}, "id": ...}`.

Errors of the envelope itself use the spec's codes; the API's own errors are -1, as
seed 001 shows. Every answer is HTTP 200: JSON-RPC clients read the error from the
body, and common ones (seed 001's own PHP client) throw on a 400 or 500 before they
look at it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

log = logging.getLogger("envoi.jsonrpc")

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
SERVER_ERROR = -32000  # the spec's range for the server's own errors: -32000 to -32099
API_ERROR = -1  # seed 001: every error of the API itself

Method = Callable[[Any], Any]  # takes the request's `params`, returns the `result`


class RpcError(Exception):
    """An error answered in the envelope's `error` member."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def handle(body: bytes, methods: Mapping[str, Method]) -> Any:
    """The answer to one HTTP body: an object, an array (batch), or None (nothing to
    answer: notifications only)."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return _answer("2.0", None, error=RpcError(PARSE_ERROR, "Parse error"))
    if isinstance(payload, list):
        if not payload:
            return _answer("2.0", None, error=RpcError(INVALID_REQUEST, "Invalid Request"))
        answers = [_call(request, methods) for request in payload]
        return [a for a in answers if a is not None] or None
    return _call(payload, methods)


def _call(request: Any, methods: Mapping[str, Method]) -> dict[str, Any] | None:
    if not isinstance(request, dict):
        return _answer("2.0", None, error=RpcError(INVALID_REQUEST, "Invalid Request"))
    version = "2.0" if request.get("jsonrpc") == "2.0" else "1.0"
    request_id = request.get("id")
    notification = version == "2.0" and "id" not in request
    method = methods.get(request["method"]) if isinstance(request.get("method"), str) else None
    try:
        if not isinstance(request.get("method"), str):
            raise RpcError(INVALID_REQUEST, "Invalid Request")
        if method is None:
            raise RpcError(METHOD_NOT_FOUND, "Method not found")
        result = method(request.get("params"))
    except RpcError as error:
        return None if notification else _answer(version, request_id, error=error)
    except Exception:  # a bug: still a JSON-RPC answer, with the traceback in the log
        log.exception("JSON-RPC method %r failed", request.get("method"))
        internal = RpcError(INTERNAL_ERROR, "Internal error")
        return None if notification else _answer(version, request_id, error=internal)
    return None if notification else _answer(version, request_id, result=result)


def _answer(
    version: str, request_id: Any, result: Any = None, error: RpcError | None = None
) -> dict[str, Any]:
    error_object = None if error is None else {"code": error.code, "message": error.message}
    if version == "1.0":
        return {"result": result, "error": error_object, "id": request_id}
    if error_object is not None:
        return {"jsonrpc": "2.0", "error": error_object, "id": request_id}
    return {"jsonrpc": "2.0", "result": result, "id": request_id}
