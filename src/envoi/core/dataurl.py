"""RFC 2397 data URLs, the seed's way of sending files inside JSON bodies."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes


class DataURLError(ValueError):
    pass


@dataclass(frozen=True)
class DataURL:
    media_type: str
    data: bytes


def parse_data_url(value: str) -> DataURL:
    """Decode `data:[mediatype][;base64],payload`; the stdlib has no parser for it."""
    if not value.startswith("data:"):
        raise DataURLError("expected a data URL: data:[mediatype];base64,[data]")
    header, sep, payload = value[5:].partition(",")
    if not sep:
        raise DataURLError("data URL has no ',' before its payload")
    params = header.split(";")
    media_type = (params[0] or "text/plain").strip().lower()
    if "base64" in (p.strip().lower() for p in params[1:]):
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise DataURLError("data URL payload is not valid base64") from None
    else:
        data = unquote_to_bytes(payload)
    return DataURL(media_type=media_type, data=data)
