"""One campaign body, two encodings: JSON (files as data URLs) or multipart/form-data.

FastAPI binds a route to one body encoding, so the campaign routes read the request
themselves and validate it with the same pydantic model either way; errors come out
in FastAPI's own 422 shape.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile

from envoi.campaigns.spec import UploadedFile

FILE_FIELDS = ("source_uploaded_csv", "additional_source_file")
_FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
_MAX_ECHO = 200

M = TypeVar("M", bound=BaseModel)


def body_reader(model: type[M]) -> Callable[[Request], Awaitable[M]]:
    """A dependency that reads the request body into `model`, whatever its encoding."""

    async def read(request: Request) -> M:
        content_type = request.headers.get("content-type", "").lower()
        if content_type.startswith(_FORM_TYPES):
            data: Any = await _form_data(request)
        else:
            data = await _json_data(request)
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            raise RequestValidationError(_errors(exc)) from None

    return read


async def _json_data(request: Request) -> Any:
    raw = await request.body()
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


async def _form_data(request: Request) -> dict[str, Any]:
    """Form fields as the JSON body would carry them.

    File parts become UploadedFile; an empty field is left out, except a file field,
    where it is an explicit null (on PUT: remove the stored file). `ab_message_ids`
    may be repeated. A file part given for a text field (`-F config=@config.json`) is
    read as its text.
    """
    data: dict[str, Any] = {}
    async with request.form(max_files=10, max_fields=200) as form:
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
    content = await value.read()
    if key in FILE_FIELDS:
        return UploadedFile(filename=value.filename, data=content)
    return content.decode("utf-8", errors="replace")


def _printable(value: Any) -> Any:
    """What an error may echo of the input: never file bytes, never a huge data URL."""
    if isinstance(value, UploadedFile):
        return f"<file {value.filename or ''} of {len(value.data)} bytes>"
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
