"""One campaign body, two encodings: JSON (files as data URLs) or multipart/form-data.

FastAPI binds a route to one body encoding, so the campaign routes read the request
themselves and validate it with the same pydantic model either way; errors come out
in FastAPI's own 422 shape.

Sizes: a multipart body carries at most MAX_UPLOAD_BYTES of files (1 GiB), spooled to
temporary files that stay open until the handler has stored them, chunk by chunk; a
JSON body, parsed whole with its data URLs, at most MAX_JSON_BYTES (32 MiB). A larger
body is a 413, refused as soon as its Content-Length or its bytes so far exceed it.
"""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData, UploadFile
from starlette.types import Message

from envoi.campaigns.spec import UploadedFile
from envoi.core.errors import EnvoiError

FILE_FIELDS = ("source_uploaded_csv", "additional_source_file")
_FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
_MAX_ECHO = 200

MIB = 1 << 20
# Read at each request (not bound at import), so a test can lower them.
MAX_UPLOAD_BYTES = 1024 * MIB
MAX_JSON_BYTES = 32 * MIB
# The form's other fields, part headers and boundaries, beyond the files themselves.
FORM_OVERHEAD_BYTES = MIB
# A text field sent as a file part (`-F config=@config.json`).
MAX_TEXT_PART_BYTES = MIB

M = TypeVar("M", bound=BaseModel)


class PayloadTooLarge(EnvoiError):
    status_code = 413


def _size_text(size: int) -> str:
    return f"{size // MIB} MiB" if size % MIB == 0 else f"{size} bytes"


def body_reader(model: type[M]) -> Callable[[Request], AsyncIterator[M]]:
    """A dependency that reads the request body into `model`, whatever its encoding.

    It yields: uploaded files are read by the handler, after validation, so their
    temporary files are closed only once the request is done.
    """

    async def read(request: Request) -> AsyncIterator[M]:
        content_type = request.headers.get("content-type", "").lower()
        if not content_type.startswith(_FORM_TYPES):
            yield _validate(model, await _json_data(request))
            return
        limit = MAX_UPLOAD_BYTES + FORM_OVERHEAD_BYTES
        limited = _limited(
            request, limit, f"the files of a request are limited to {_size_text(MAX_UPLOAD_BYTES)}"
        )
        form = await limited.form(max_files=10, max_fields=200)
        try:
            yield _validate(model, await _form_data(form))
        finally:
            await form.close()

    return read


def _validate(model: type[M], data: Any) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(_errors(exc)) from None


def _limited(request: Request, limit: int, why: str) -> Request:
    """The request with a body of at most `limit` bytes: PayloadTooLarge beyond, from
    the declared Content-Length at once, else as soon as that many bytes arrived."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the request body is too large: {why}")
    received = 0

    async def receive() -> Message:
        nonlocal received
        message = await request.receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise PayloadTooLarge(f"the request body is too large: {why}")
        return message

    return Request(request.scope, receive)


async def _json_data(request: Request) -> Any:
    limited = _limited(
        request,
        MAX_JSON_BYTES,
        f"a JSON body is limited to {_size_text(MAX_JSON_BYTES)}; "
        "send large lists as multipart/form-data file parts",
    )
    raw = await limited.body()
    if not raw.strip():
        raise RequestValidationError(
            [{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}]
        )
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        error = exc.msg if isinstance(exc, json.JSONDecodeError) else "not UTF-8"
        position = exc.pos if isinstance(exc, json.JSONDecodeError) else exc.start
        raise RequestValidationError(
            [
                {
                    "type": "json_invalid",
                    "loc": ("body", position),
                    "msg": "JSON decode error",
                    "input": {},
                    "ctx": {"error": error},
                }
            ]
        ) from None


async def _form_data(form: FormData) -> dict[str, Any]:
    """Form fields as the JSON body would carry them.

    File parts become UploadedFile; an empty field is left out, except a file field,
    where it is an explicit null (on PUT: remove the stored file). `ab_message_ids`
    may be repeated. A file part given for a text field (`-F config=@config.json`) is
    read as its text.
    """
    data: dict[str, Any] = {}
    for key in dict.fromkeys(form.keys()):
        values = [await _form_value(key, v) for v in form.getlist(key)]
        if key == "ab_message_ids" and len(values) > 1:
            data[key] = [v for v in values if v not in ("", None)]
            continue
        value = values[-1]
        if value == "":
            if key in FILE_FIELDS:
                data[key] = None
            continue
        data[key] = value
    return data


async def _form_value(key: str, value: UploadFile | str) -> Any:
    if isinstance(value, str):
        return value
    if key in FILE_FIELDS:
        # Not read here: the spooled file is checked and stored chunk by chunk later.
        size = value.size if value.size is not None else _file_size(value)
        return UploadedFile(filename=value.filename, stream=value.file, size=size)
    content = await value.read(MAX_TEXT_PART_BYTES + 1)
    if len(content) > MAX_TEXT_PART_BYTES:
        raise PayloadTooLarge(
            f"{key} is larger than {_size_text(MAX_TEXT_PART_BYTES)}; only files may be larger"
        )
    return content.decode("utf-8", errors="replace")


def _file_size(value: UploadFile) -> int:
    position = value.file.seek(0, 2)
    value.file.seek(0)
    return position


def _printable(value: Any) -> Any:
    """What an error may echo of the input: never file bytes, never a huge data URL."""
    if isinstance(value, UploadedFile):
        return f"<file {value.filename or ''} of {value.size} bytes>"
    if isinstance(value, str) and len(value) > _MAX_ECHO:
        return value[:_MAX_ECHO] + "..."
    if isinstance(value, dict):
        return {k: _printable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_printable(v) for v in value]
    return value


def _errors(exc: ValidationError) -> list[dict[str, Any]]:
    errors = []
    for error in exc.errors(include_url=False):
        item: dict[str, Any] = {
            "type": error["type"],
            "loc": ("body", *error["loc"]),
            "msg": error["msg"],
            "input": _printable(error.get("input")),
        }
        if "ctx" in error:
            item["ctx"] = {
                k: v if isinstance(v, str | int | float) else str(v)
                for k, v in error["ctx"].items()
            }
        errors.append(item)
    return errors


def inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """A pydantic JSON schema with its `$defs` inlined, to sit inside an OpenAPI path."""
    defs = schema.get("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(copy.deepcopy(defs[ref.removeprefix("#/$defs/")]))
            return {k: resolve(v) for k, v in node.items() if k != "$defs"}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


def openapi_body(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` declaring both encodings of a campaign body."""
    json_schema = inline_refs(model.model_json_schema())
    form_schema = copy.deepcopy(json_schema)
    properties = form_schema.get("properties", {})
    for name in FILE_FIELDS:
        if name in properties:
            properties[name] = {"type": "string", "format": "binary", "description": "A CSV file"}
    if "config" in properties:
        properties["config"] = {"type": "string", "description": "The config object as JSON text"}
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": json_schema},
                "multipart/form-data": {"schema": form_schema},
            },
        }
    }
