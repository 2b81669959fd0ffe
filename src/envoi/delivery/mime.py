"""The bytes of a message, built by hand: headers (RFC 5322, RFC 2047) and a MIME body.

The stdlib `email` package builds a message as an object tree and generates it through
a policy: about 2.5 ms of CPU for the two-part message of bench/render.py (measured with
EmailMessage, set_content/add_alternative, as_bytes), where envoi's whole render of it,
Jinja and signed URLs included, takes about 0.2 ms; the delivery bar is 2,000 messages
a second on 2 cores with rendering, signing and SMTP sharing them. A campaign's messages
differ only in a few header values and in their bodies: `MimeSkeleton` prepares
everything else once (boundary, part headers), and a message is a join of strings plus
one quoted-printable encoding per part, made of C-level string operations
(`quoted_printable`). Tests parse every kind of message back with `email` to prove the
output right.

Everything produced here has CRLF line endings and lines of at most 998 octets.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import struct
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
# Quoted-printable (`quoted_printable`): the octets written as they are (printable
# ASCII but `=`, space, tab, line feed), the others, escaped by a regular expression,
# the numbers of them and of lines from which binascii encodes faster, line lengths.
_QP_LITERAL = bytes(range(32, 127)).replace(b"=", b"") + b"\t\n"
_QP_OCTETS = re.compile(rb"[^\t\n -~]+")
_QP_FEW = 64
_QP_FEW_LINES = 8
_QP_LINE = 76  # RFC 2045 6.7 (5): encoded lines of at most 76 characters
_QP_CUT = 73
_QP_BATCH = 64
_EQUALS = ord("=")
_QP_CUTTERS: dict[int, struct.Struct] = {}


def one_line(value: str) -> str:
    """A header value from data: control characters (a CR LF would start a new header)
    become one space each run."""
    if value.isprintable():  # no control character: tested in C, the common case
        return value.strip()
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
    """UTF-8 `text` as quoted-printable with CRLF line ends (lines of at most 76).

    binascii.b2a_qp tests every octet against a dozen rules and takes about 13 ns an
    octet: some 70 microseconds for a 5 KB HTML part, the largest single cost of a
    render. Text of a few lines of mostly printable ASCII (rendered HTML often is one
    long line) is encoded here with C-level whole-string operations instead: `=`
    escaped by one replace, other octets by a regular expression, the blank before
    each line end escaped, and long lines cut every 73 octets, a cut moved back
    before an escape it would split, so that no line is longer than 76 with its soft
    break. Text of many lines (the Python work per line then costs more), or with
    many octets to escape (non-Latin scripts), still goes through binascii. Both are
    valid RFC 2045 encodings of the same text; their soft breaks are placed
    differently (and this one never makes a line of 77, which binascii does when it
    escapes a blank at a line end)."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if text.count("\n") >= _QP_FEW_LINES:
        return _binascii_qp(text)
    data = text.encode()
    odd = data.translate(None, _QP_LITERAL)  # the octets to escape: `=` and the rest
    if odd:
        equals = odd.count(b"=")
        if len(odd) - equals > _QP_FEW:
            return _binascii_qp(text)
        if equals:
            data = data.replace(b"=", b"=3D")  # first: the other escapes make `=`s
        if len(odd) != equals:
            data = _QP_OCTETS.sub(_qp_escape, data)
    return _qp_lines([*data.split(b"\n"), b""])  # b"": the text ends with a line end


def _binascii_qp(text: str) -> bytes:
    """`quoted_printable(text)` by binascii (`text` with LF line ends)."""
    # binascii picks CRLF for its soft line breaks from the first line end it meets:
    # the text always ends with one.
    data = (text.replace("\n", CRLF) + CRLF).encode()
    return binascii.b2a_qp(data, quotetabs=False, istext=True, header=False)


def _qp_lines(lines: list[bytes]) -> bytes:
    """The end of `quoted_printable`: `lines` (escapes made) with the blank at their
    end escaped, cut when long, joined with CRLF."""
    for index, line in enumerate(lines):
        # A blank at a line end would be lost in transit: the last one of each line
        # is escaped (those before it are no longer at the end).
        last = line[-1:]
        encoded = line
        if last == b" ":
            encoded = line[:-1] + b"=20"
        elif last == b"\t":
            encoded = line[:-1] + b"=09"
        if len(encoded) > _QP_LINE:
            lines[index] = _qp_wrap(encoded, b"\r\n")
        elif encoded == b".":
            # A line of a lone dot ends the SMTP DATA of a relay that forgets to
            # stuff dots.
            lines[index] = b"=2E"
        else:
            lines[index] = encoded
    return b"\r\n".join(lines)


def _qp_escape(match: re.Match[bytes]) -> bytes:
    """`=XX` for each octet of a run (UTF-8 of a non-ASCII character, a control)."""
    return b"=" + binascii.hexlify(match[0], b"=").upper()


def _qp_wrap(line: bytes, newline: bytes) -> bytes:
    """One encoded line (escapes made, no line end) cut with soft line breaks (`=` and
    `newline`) into lines of at most 76 octets: every 73 octets, a cut that would
    split an escape `=XX` moved back before it (to a line of 71 or 72; the next line
    then has up to 75 octets with its break)."""
    if len(line) <= 2 * _QP_CUT:  # one cut (the second piece has at most 75 octets)
        cut = _QP_CUT - 1 if line[_QP_CUT - 1] == _EQUALS else _QP_CUT
        if line[_QP_CUT - 2] == _EQUALS:
            cut = _QP_CUT - 2
        return line[:cut] + b"=" + newline + line[cut:]
    # struct cuts a string into equal pieces in one C call, about 7 times faster than
    # slicing in Python; one Struct per count of pieces up to _QP_BATCH, kept.
    count = len(line) // _QP_CUT
    pieces: list[bytes] = []
    offset = 0
    while count:
        batch = min(count, _QP_BATCH)
        cutter = _QP_CUTTERS.get(batch)
        if cutter is None:
            cutter = _QP_CUTTERS[batch] = struct.Struct(f"{_QP_CUT}s" * batch)
        pieces += cutter.unpack_from(line, offset)
        offset += batch * _QP_CUT
        count -= batch
    if offset < len(line):
        pieces.append(line[offset:])
    # Piece k ends at octet 73 (k + 1): the escape starts there when `=` is its last
    # octet (back 1) or the one before it (back 2); both cannot be, as an escape's
    # digits are no `=`.
    for back in (1, 2):
        ends = line[_QP_CUT - back :: _QP_CUT]
        at = ends.find(b"=")
        while at >= 0:
            piece = pieces[at]
            pieces[at] = piece[:-back]
            pieces[at + 1] = piece[-back:] + pieces[at + 1]
            at = ends.find(b"=", at + 1)
    if pieces[-1] == b".":
        pieces[-1] = b"=2E"  # not a line of a lone dot (see _qp_lines)
    return (b"=" + newline).join(pieces)


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
