"""The seed's `file_html` uploads: a data URL of an HTML file, or of a zip holding
exactly one HTML file and the images (stylesheets, fonts ...) it refers to.

Zips come from strangers, so they are read defensively: no path may leave the
archive, and the number of entries and the total uncompressed size are capped
before and while anything is decompressed (zip bombs).
"""

from __future__ import annotations

import io
import posixpath
import re
import zipfile
import zlib
from dataclasses import dataclass, field

from envoi.core.dataurl import DataURLError, parse_data_url
from envoi.emails.htmlfiles import text_encoding

MAX_ENTRIES = 500
MAX_TOTAL_SIZE = 20 * 1024 * 1024
MAX_PATH_LENGTH = 500  # EmailAsset.path
HTML_TYPES = frozenset({"text/html"})
# What browsers put in `FileReader.readAsDataURL` for a .zip, depending on the OS.
ZIP_TYPES = frozenset({"application/zip", "application/x-zip-compressed", "application/x-zip"})
HTML_SUFFIXES = (".html", ".htm")
_DRIVE = re.compile(r"^[A-Za-z]:")


class UploadError(ValueError):
    """Why an upload was refused, in words a user can act on."""


@dataclass(frozen=True)
class HtmlUpload:
    """The HTML file's bytes, the folder it sits in inside the zip, and every other file."""

    html: bytes
    charset: str | None = None
    html_dir: str = ""
    files: dict[str, bytes] = field(default_factory=dict)


def read_upload(value: str) -> HtmlUpload:
    """Decode a `file_html` data URL; raise UploadError for anything unusable."""
    try:
        parsed = parse_data_url(value)
    except DataURLError as exc:
        raise UploadError(str(exc)) from None
    if len(parsed.data) > MAX_TOTAL_SIZE:
        raise UploadError(f"the file is larger than {_megabytes(MAX_TOTAL_SIZE)}")
    if parsed.media_type in HTML_TYPES:
        return HtmlUpload(html=parsed.data, charset=_charset(value))
    if parsed.media_type in ZIP_TYPES:
        return read_zip(parsed.data)
    raise UploadError(
        f"expected a data URL of text/html or application/zip, not {parsed.media_type}"
    )


def read_zip(data: bytes) -> HtmlUpload:
    """One HTML file plus its assets, keyed by their path inside the zip."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            files = _read_members(archive)
    except RuntimeError:  # what zipfile raises for an encrypted member
        raise UploadError("encrypted zips are not supported") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error, NotImplementedError):
        raise UploadError("the file is not a readable zip archive") from None
    pages = sorted(path for path in files if path.lower().endswith(HTML_SUFFIXES))
    if not pages:
        raise UploadError("the zip holds no .html file")
    if len(pages) > 1:
        raise UploadError(
            f"the zip holds {len(pages)} HTML files ({', '.join(pages)}); exactly one is allowed"
        )
    html = files.pop(pages[0])
    return HtmlUpload(html=html, html_dir=posixpath.dirname(pages[0]), files=files)


def _read_members(archive: zipfile.ZipFile) -> dict[str, bytes]:
    infos = archive.infolist()
    if len(infos) > MAX_ENTRIES:
        raise UploadError(f"the zip holds {len(infos)} entries; at most {MAX_ENTRIES} are allowed")
    members = [(info, path) for info in infos if (path := member_path(info.filename)) is not None]
    limit = f"the zip's files add up to more than {_megabytes(MAX_TOTAL_SIZE)} uncompressed"
    if sum(info.file_size for info, _ in members) > MAX_TOTAL_SIZE:
        raise UploadError(limit)
    files: dict[str, bytes] = {}
    remaining = MAX_TOTAL_SIZE
    for info, path in members:
        if path in files:
            raise UploadError(f"the zip holds {path!r} twice")
        with archive.open(info) as member:
            # Never trust the declared sizes alone: read at most what is left of the cap.
            content = member.read(remaining + 1)
        if len(content) > remaining:
            raise UploadError(limit)
        remaining -= len(content)
        files[path] = content
    return files


def member_path(name: str) -> str | None:
    """The clean relative path of a zip entry; None for folders, dot-files and `__MACOSX/`.

    Raises UploadError for a path that would leave the archive (`../x`, `/etc/x`, `C:x`).
    """
    name = name.replace("\\", "/")
    parts = name.split("/")
    if name.startswith("/") or _DRIVE.match(name) or ".." in parts:
        raise UploadError(f"the zip holds an unsafe path: {name!r}")
    parts = [part for part in parts if part not in ("", ".")]
    if name.endswith("/") or not parts:
        return None
    if parts[0] == "__MACOSX" or any(part.startswith(".") for part in parts):
        return None
    path = "/".join(parts)
    if len(path) > MAX_PATH_LENGTH:
        raise UploadError(f"a path in the zip is longer than {MAX_PATH_LENGTH} characters")
    return path


def _charset(value: str) -> str | None:
    """The codec of a data URL's `charset=` (`data:text/html;charset=windows-1251;...`).

    The client wrote it on purpose, so one that names no text encoding (a typo, or
    `hex`, `base64` ...) is refused rather than guessed around."""
    declared = _charset_parameter(value)
    if declared is None:
        return None
    codec = text_encoding(declared)
    if codec is None:
        raise UploadError(f"the data URL's charset {declared!r} is not a known text encoding")
    return codec


def _charset_parameter(value: str) -> str | None:
    """`data:text/html;charset=windows-1251;base64,...` -> "windows-1251"."""
    header = value[len("data:") :].partition(",")[0]
    for parameter in header.split(";")[1:]:
        key, _, charset = parameter.partition("=")
        if key.strip().lower() == "charset" and charset.strip():
            return charset.strip().strip('"')
    return None


def _megabytes(size: int) -> str:
    return f"{size // (1024 * 1024)} MB"
