"""Uploaded CSV files, stored in chunks: written as they are read, read back as a stream.

A file is one CampaignFile row (name, size) and CampaignFileChunk rows of at most
CHUNK_BYTES each. Neither direction ever holds more than one chunk, so memory stays
flat in the file's size: an upload is copied from its spooled temporary file chunk
by chunk, and `open_file` answers a binary stream that fetches the next chunk only
when the reader (csv, via `envoi.core.csvsource.text_stream`) needs it.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session

from envoi.campaigns.models import CampaignFile, CampaignFileChunk
from envoi.campaigns.spec import UploadedFile

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

CHUNK_BYTES = 1 << 20  # 1 MiB a row: well within bytea's and SQLite's blob limits
_READ_BUFFER = 1 << 16


@dataclass(frozen=True)
class StoredFile:
    filename: str | None
    size: int


def stored_files(session: Session, campaign_ids: list[int]) -> dict[tuple[int, str], StoredFile]:
    """Name and size of the stored files, by (campaign id, kind), without their bytes."""
    if not campaign_ids:
        return {}
    query = select(
        CampaignFile.campaign_id, CampaignFile.kind, CampaignFile.filename, CampaignFile.size
    ).where(CampaignFile.campaign_id.in_(campaign_ids))
    return {(cid, kind): StoredFile(name, size) for cid, kind, name, size in session.execute(query)}


def delete_file(session: Session, campaign_id: int, kind: str) -> None:
    for model in (CampaignFileChunk, CampaignFile):
        session.execute(delete(model).where(model.campaign_id == campaign_id, model.kind == kind))


def store_file(session: Session, campaign_id: int, kind: str, upload: UploadedFile) -> None:
    """Replace the campaign's file of this kind with `upload`, one chunk per statement."""
    delete_file(session, campaign_id, kind)
    key = {"campaign_id": campaign_id, "kind": kind}
    session.execute(insert(CampaignFile), [key | {"filename": upload.filename, "size": 0}])
    size = 0
    for seq, chunk in enumerate(_chunks_of(upload)):
        # Parameters apart from the statement: no compiled-statement cache keeps a chunk.
        session.execute(insert(CampaignFileChunk), [key | {"seq": seq, "data": chunk}])
        size += len(chunk)
    session.execute(
        update(CampaignFile)
        .where(CampaignFile.campaign_id == campaign_id, CampaignFile.kind == kind)
        .values(size=size)
    )


def _chunks_of(upload: UploadedFile) -> Iterable[bytes]:
    upload.stream.seek(0)
    while chunk := upload.stream.read(CHUNK_BYTES):
        yield chunk


class _ChunkReader(io.RawIOBase):
    """The stored chunks of one file as a raw byte stream, fetched one at a time."""

    def __init__(self, session: Session, campaign_id: int, kind: str) -> None:
        self._session = session
        self._campaign_id = campaign_id
        self._kind = kind
        self._next_seq = 0
        self._pending = memoryview(b"")
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        while not self._pending:
            if self._done:
                return 0
            chunk = self._session.scalar(
                select(CampaignFileChunk.data).where(
                    CampaignFileChunk.campaign_id == self._campaign_id,
                    CampaignFileChunk.kind == self._kind,
                    CampaignFileChunk.seq == self._next_seq,
                )
            )
            self._next_seq += 1
            if chunk is None:
                self._done = True
                return 0
            self._pending = memoryview(chunk)
        size = min(memoryview(buffer).nbytes, len(self._pending))
        memoryview(buffer).cast("B")[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


def open_file(session: Session, campaign_id: int, kind: str) -> io.BufferedReader | None:
    """The stored file as a binary stream (None if there is none); read it before the
    session ends. Only the current chunk and a small read buffer are in memory."""
    exists = session.scalar(
        select(CampaignFile.size).where(
            CampaignFile.campaign_id == campaign_id, CampaignFile.kind == kind
        )
    )
    if exists is None:
        return None
    return io.BufferedReader(_ChunkReader(session, campaign_id, kind), _READ_BUFFER)
