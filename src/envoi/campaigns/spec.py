"""What a client asks a campaign to be, as plain values: the services' input, free of HTTP."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import IO, Any, Final


class PostType:
    """The `post_type` letters of seed 002's statistics: the `post` key is `S_12`."""

    REGULAR: Final = "S"
    AB: Final = "B"
    AUTOMATED: Final = "A"


class SourceType:
    UPLOADED: Final = "U"
    SEGMENT: Final = "S"
    API: Final = "A"


class FileKind:
    """`CampaignFile.kind`, one row per kind and campaign."""

    SOURCE: Final = "source"
    ADDITIONAL: Final = "additional"


@dataclass(frozen=True)
class UploadedFile:
    """A CSV as received: a multipart part (a spooled temporary file, on disk beyond
    1 MiB) or a data URL's bytes. Readers seek to 0 and read it in chunks."""

    filename: str | None
    stream: IO[bytes]
    size: int

    @classmethod
    def from_bytes(cls, filename: str | None, data: bytes) -> UploadedFile:
        return cls(filename, io.BytesIO(data), len(data))


class Keep(Enum):
    """On rewrite, a file the request does not mention stays as stored (files are heavy
    to send again); an explicit null removes it."""

    STORED = "stored"


KEEP: Final = Keep.STORED

FileChange = UploadedFile | Keep | None


@dataclass(frozen=True)
class CampaignSpec:
    """Every field of the seed's three campaign tables; unused ones keep their default."""

    post_type: str
    message_type: str
    message_id: int
    source_type: str
    source_id: int | None = None
    ab_message_ids: tuple[int, ...] = ()
    source_file: FileChange = None
    additional_file: FileChange = None
    config: dict[str, Any] = field(default_factory=dict)
    tags: str | None = None
    priority: int = 0
    planned_at: datetime | None = None
    send_during_hours: int | None = None
    start_immediately: bool = False
    ab_percent: int | None = None
    win_parameter: str | None = None
    test_planned_at: datetime | None = None
    main_planned_at: datetime | None = None
    crontab: str | None = None
    run_from: datetime | None = None
    run_to: datetime | None = None
    # An automated campaign's trigger (`automation.schemas.TriggerIn.stored`), or None.
    trigger: dict[str, Any] | None = None
