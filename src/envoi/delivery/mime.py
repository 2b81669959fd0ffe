"""The bytes of a message, built by hand: headers (RFC 5322, RFC 2047) and a MIME body.

The stdlib `email` package builds a message as an object tree and generates it through
a policy: about 2.5 ms of CPU for the two-part message of bench/render.py (measured with
EmailMessage, set_content/add_alternative, as_bytes), where envoi's whole render of it,
Jinja and signed URLs included, takes about 0.2 ms; the delivery bar is 2,000 messages
a second on 2 cores with rendering, signing and SMTP sharing them. A campaign's messages
differ only in a few header values and in their bodies: `MimeSkeleton` prepares
everything else once (boundary, part headers), and a message is a join of strings plus
one C-level quoted-printable encoding (binascii) per part. Tests parse every kind of
message back with `email` to prove the output right.

Everything produced here has CRLF line endings and lines of at most 998 octets.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime
from email.utils import format_datetime

CRLF = "\r\n"
# Encoded words of at most 75 characters (RFC 2047 2.): "=?utf-8?b?" + 60 + "?=".
_WORD_BYTES = 45
_FOLD_AT = 78  # RFC 5322 2.1.1: lines SHOULD be no longer than 78 characters
_HARD_LIMIT = 998
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_NAMED = re.compile(r"^(?P<name>[^<>]*?)\s*<(?P<address>[^<>]*)>$")
# RFC 5322 atext plus the spaces between words: what a display name may be unquoted.
_PHRASE = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~ -]*")


def one_line(value: str) -> str:
    """A header value from data: control characters (a CR LF would start a new header)
    become one space each run."""
    return _CONTROL.sub(" ", value).strip()


def unstructured(name: str, value: str) -> str:
    """`Name: value` CRLF for free text (Subject, tags): folded at spaces, or made of
    RFC 2047 encoded words when it is not plain ASCII."""
    value = one_line(value)
    if value.isascii() and "=?" not in value:
        folded = _fold_words(f"{name}: {value}")
        if folded is not None:
            return folded
    return f"{name}: {encoded_words(value)}{CRLF}"


def _fold_words(line: str) -> str | None:
    """`line` folded before spaces so that lines stay within 78 characters when the
    words allow; None when a word alone is beyond the hard limit of 998."""
    if len(line) <= _FOLD_AT:
        return line + CRLF
    lines: list[str] = []
    current = ""
    for word in line.split(" "):
        if current and len(current) + 1 + len(word) > _FOLD_AT:
            lines.append(current)
            current = " " + word
        else:
            current = f"{current} {word}" if current else word
    lines.append(current)
    if any(len(piece) > _HARD_LIMIT for piece in lines):
        return None
    return CRLF.join(lines) + CRLF


def encoded_words(text: str) -> str:
    """`text` as base64 encoded words of whole characters, folded one word a line."""
    words: list[str] = []
    chunk: list[str] = []
    size = 0
    for char in text:
        width = len(char.encode())
        if size + width > _WORD_BYTES:
            words.append(_word("".join(chunk)))
            chunk, size = [], 0
        chunk.append(char)
        size += width
    if chunk or not words:
        words.append(_word("".join(chunk)))
    return f"{CRLF} ".join(words)


def _word(text: str) -> str:
    return f"=?utf-8?b?{base64.b64encode(text.encode()).decode()}?="


def split_address(value: str) -> tuple[str, str]:
    """(display name, address) of `Name <address>` or of a bare address."""
    match = _NAMED.match(value.strip())
    if match is None:
        return "", value.strip()
    return match["name"].strip().strip('"').strip(), match["address"].strip()


def ascii_address(address: str) -> str:
    """The address with an internationalised domain in its IDNA (xn--) form; a
    non-ASCII local part is kept (it needs SMTPUTF8 whatever we do)."""
    local, at, domain = address.rpartition("@")
    if not at or domain.isascii():
        return address
    try:
        return f"{local}@{domain.encode('idna').decode('ascii')}"
    except UnicodeError:
        return address


def address_header(name: str, value: str) -> str:
    """`Name: display <address>` CRLF, the display name quoted or encoded as needed."""
    display, address = split_address(one_line(value))
    address = ascii_address(address)
    if not display:
        return f"{name}: {address}{CRLF}"
    if not display.isascii() or "=?" in display:
        phrase = encoded_words(display)
    elif _PHRASE.fullmatch(display):
        phrase = display
    else:
        escaped = display.replace("\\", "\\\\").replace('"', '\\"')
        phrase = f'"{escaped}"'
    header = f"{name}: {phrase} <{address}>"
    if len(header) > _FOLD_AT and CRLF not in phrase:
        header = f"{name}: {phrase}{CRLF} <{address}>"
    return header + CRLF


class _DateCache:
    """RFC 5322 date of the current second: formatting it per message costs more than
    the rest of the headers together."""

    def __init__(self) -> None:
        self._second = -1
        self._value = ""

    def now(self) -> str:
        moment = datetime.now(UTC)
        second = int(moment.timestamp())
        if second != self._second:
            self._value = format_datetime(moment.replace(microsecond=0))
            self._second = second
        return self._value


current_date = _DateCache().now


def quoted_printable(text: str) -> bytes:
    """UTF-8 `text` as quoted-printable with CRLF line ends (lines of at most 76)."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    # binascii picks CRLF for its soft line breaks from the first line end it meets,
    # so the text always ends with one.
    data = (text.replace("\n", CRLF) + CRLF).encode()
    return binascii.b2a_qp(data, quotetabs=False, istext=True, header=False)


class MimeSkeleton:
    """What every message of a compiled email shares: the top-level Content-Type and,
    for a multipart/alternative message, its boundary and each part's headers.

    The boundary starts with `=_`, which quoted-printable bodies can never contain
    (`=` is always encoded there), so no body needs to be searched for it.
    """

    def __init__(self, content_types: Sequence[str]) -> None:
        if not content_types:
            raise ValueError("a message has at least one part")
        part_headers = [
            f'Content-Type: {kind}; charset="utf-8"{CRLF}'
            f"Content-Transfer-Encoding: quoted-printable{CRLF}"
            for kind in content_types
        ]
        if len(content_types) == 1:
            self.headers = "MIME-Version: 1.0" + CRLF + part_headers[0]
            self._openings: list[bytes] = [CRLF.encode()]
            self._closing = b""
            return
        boundary = "=_envoi_" + secrets.token_hex(12)
        self.headers = (
            f"MIME-Version: 1.0{CRLF}"
            f'Content-Type: multipart/alternative;{CRLF} boundary="{boundary}"{CRLF}'
        )
        # Each body ends with a CRLF, which is the one a delimiter line starts with
        # (RFC 2046 5.1.1); the first delimiter follows the blank line of the header.
        self._openings = [
            f"{CRLF if index == 0 else ''}--{boundary}{CRLF}{headers}{CRLF}".encode()
            for index, headers in enumerate(part_headers)
        ]
        self._closing = f"--{boundary}--{CRLF}".encode()

    def assemble(self, headers: str, bodies: Sequence[bytes]) -> bytes:
        """The message: `headers` (each line ending CRLF, `self.headers` among them) and
        one quoted-printable body per content type, in the skeleton's order."""
        pieces = [headers.encode()]
        for opening, body in zip(self._openings, bodies, strict=True):
            pieces.append(opening)
            pieces.append(body)
        pieces.append(self._closing)
        return b"".join(pieces)
