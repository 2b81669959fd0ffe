"""Signed tokens for the public URLs and addresses of a message (no I/O).

A token is `VALUE.MAC`: the value in clear (a spool id, `id-link`), and 20 hex
digits (80 bits) of HMAC-SHA256 over the purpose and the value. The purpose keeps a token
made for one use (an open pixel) from being replayed for another (an unsubscribe).
The alphabet (digits, `a-f`, `.` and `-`) is safe in URL paths and in
the local part of an address, so the same token serves the VERP return path.

A token can also be bound to a target: its MAC then covers the purpose, the value and
the target (`Signer.sign(purpose, value, target)`), and it verifies only together
with that exact target. The click URL of a link the template wrote from data
(`href="{{ product.url }}"`) carries its target so: whoever changes the target in
the URL breaks the MAC, so nobody can make a valid click URL to a target of their
choice (no open redirect).

Hand-written rather than itsdangerous: a message carries a dozen tokens and the
delivery bar is thousands of messages a second, so this is kept to one HMAC and no
JSON or timestamps (a sent message's links must keep working for years).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import quote

MAC_BYTES = 10  # 80 bits: 20 hex digits
_BLOCK = 64  # SHA-256 block size
# What a target-bound MAC covers: `purpose+target:value` LF `target`. The `+target`
# keeps the two kinds of input apart (a plain one is `purpose:value`, and purposes are
# plain words), and the value may not hold a LF, so (value, target) reads one way only.
_BOUND = "+target:"
# Characters kept as they are in the `u` parameter of a click URL; everything else is
# percent-encoded (`&`, `=`, `+`, `#`, `?`, `%`, quotes, spaces ...), so the URL needs no
# HTML escaping and `u` decodes back exactly with any query-string parser.
_TARGET_SAFE = ":/"
# `quote(target, _TARGET_SAFE)` for an ASCII target, faster: `quote` costs a Python
# call per byte (about 5 of the 7 microseconds of a target-bound click URL). The
# characters of a URL's query are replaced in C (`%` first: the others make `%`s),
# any other one by a regular expression.
_QUERY_CHARACTERS = (("%", "%25"), ("?", "%3F"), ("=", "%3D"), ("&", "%26"))
_STILL_UNSAFE = re.compile(r"[^A-Za-z0-9_.~:/%-]")


class _Sha256(Protocol):
    def copy(self) -> _Sha256: ...
    def update(self, data: bytes, /) -> None: ...
    def digest(self) -> bytes: ...


def _builtin_sha256() -> Callable[[bytes], _Sha256]:
    """CPython's own SHA-256 (module `_sha256`), else hashlib's (OpenSSL). A token's
    two short hashes cost less there: copying its state is a copy of a small struct,
    where OpenSSL's EVP context copy allocates (about 0.5 of the 2 microseconds of a
    MAC). Same SHA-256, same tokens."""
    try:
        constructor: Callable[[bytes], _Sha256] = importlib.import_module("_sha256").sha256
    except (ImportError, AttributeError):  # a Python built without it
        return hashlib.sha256
    return constructor


_sha256 = _builtin_sha256()


class Signer:
    def __init__(self, key: str | bytes) -> None:
        raw = key.encode() if isinstance(key, str) else key
        if len(raw) > _BLOCK:
            raw = hashlib.sha256(raw).digest()
        raw = raw.ljust(_BLOCK, b"\0")
        # HMAC's two keyed SHA-256 states, computed once: a token then costs two state
        # copies and two short updates (RFC 2104), about half of `hmac.digest` per call,
        # which matters at two dozen tokens per message.
        self._inner = _sha256(bytes(b ^ 0x36 for b in raw))
        self._outer = _sha256(bytes(b ^ 0x5C for b in raw))

    def mac(self, data: bytes) -> str:
        """The MAC of `data` (what `sign` covers: `purpose:value`, or
        `purpose+target:value` LF `target`), as the 20 hex digits of a token."""
        inner = self._inner.copy()
        inner.update(data)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()[:MAC_BYTES].hex()

    def macs(self, data: list[bytes]) -> list[str]:
        """`[self.mac(item) for item in data]`, without a call per item."""
        inner_state, outer_state, size = self._inner, self._outer, MAC_BYTES
        macs = []
        for item in data:
            inner = inner_state.copy()
            inner.update(item)
            outer = outer_state.copy()
            outer.update(inner.digest())
            macs.append(outer.digest()[:size].hex())
        return macs

    def _mac(self, purpose: str, value: str, target: str | None) -> str:
        if target is None:
            return self.mac(f"{purpose}:{value}".encode())
        return self.mac(f"{purpose}{_BOUND}{value}\n{target}".encode())

    def sign(self, purpose: str, value: str, target: str | None = None) -> str:
        """`VALUE.MAC`; with `target`, a MAC that also covers the target (the value
        may then hold no line feed)."""
        if target is not None and "\n" in value:
            raise ValueError("a target-bound token's value cannot hold a line feed")
        return f"{value}.{self._mac(purpose, value, target)}"

    def unsign(self, purpose: str, token: str, target: str | None = None) -> str | None:
        """The value of a genuine token of this purpose (made with this `target`, or
        without one when `target` is None), else None (never raises)."""
        value, dot, mac = token.rpartition(".")
        if not dot or not value or (target is not None and "\n" in value):
            return None
        if not hmac.compare_digest(mac.encode(), self._mac(purpose, value, target).encode()):
            return None
        return value


@dataclass(frozen=True)
class Click:
    """A verified click token. `target` None: a literal link of the email, whose URL is
    `CompiledMessage.link_urls[link]` of the send's email and language; else a link the
    template wrote, and `target` is where it leads (signed into the token)."""

    send_id: int
    link: int
    target: str | None


def read_click(signer: Signer, token: str, target: str | None = None) -> Click | None:
    """The click that `token` (the last segment of a `/t/c/` path) stands for, or None
    when it is not genuine. `target` is the URL's `u` query parameter, decoded, when
    the URL has one: a token verifies only with the target it was made for, so a `u`
    added to a literal link's URL, or changed on a written link's URL, is refused."""
    value = signer.unsign("click", token, target)
    if value is None:
        return None
    send, dash, link = value.partition("-")
    if not dash or not (send.isascii() and send.isdigit() and link.isascii() and link.isdigit()):
        return None
    return Click(int(send), int(link), target)


class MessageLinks:
    """Every signed URL and address of one sent message (spool row `send_id`).

    The tracking endpoints (issue: tracking and feedback) read these paths back:
    `/t/o/` open pixel, `/t/c/` click, `/t/m/` web view ("mirror"), `/t/u/`
    unsubscribe, `/t/f/` forward to a friend, `/t/g/` goal (the customer's site
    calls it with the `goal` token the message carried). A click's value is
    `SEND-LINK`: LINK is the link's index in the message (see `click`); `read_click`
    verifies it.
    """

    def __init__(self, public_url: str, signer: Signer) -> None:
        self._base = public_url.rstrip("/")
        self._signer = signer
        self._click_base = f"{self._base}/t/c/"

    def open(self, send_id: int) -> str:
        return f"{self._base}/t/o/{self._signer.sign('open', str(send_id))}"

    def click(self, send_id: int, link: int, target: str | None = None) -> str:
        """The click URL of link `link`. Without `target` (a literal link of the email,
        whose URL the tracking endpoint finds by index): `/t/c/SEND-LINK.MAC`. With
        it (a link written by the template for this recipient):
        `/t/c/SEND-LINK.MAC?u=TARGET`, TARGET percent-encoded and covered by the MAC."""
        # `Signer.sign` inlined: a message has a click URL per link (the value, digits
        # and a dash, holds no line feed).
        value = f"{send_id}-{link}"
        if target is None:
            mac = self._signer.mac(f"click:{value}".encode())
            return f"{self._click_base}{value}.{mac}"
        mac = self._signer.mac(f"click{_BOUND}{value}\n{target}".encode())
        return f"{self._click_base}{value}.{mac}?u={_encode_target(target)}"

    def clicks(self, send_id: int, count: int) -> list[str]:
        """`click(send_id, link)` for links 0 to `count - 1`: a message's literal links."""
        base = self._click_base
        values = [f"{send_id}-{link}" for link in range(count)]
        macs = self._signer.macs([f"click:{value}".encode() for value in values])
        return [f"{base}{value}.{mac}" for value, mac in zip(values, macs, strict=True)]

    def mirror(self, send_id: int) -> str:
        return f"{self._base}/t/m/{self._signer.sign('mirror', str(send_id))}"

    def unsubscribe(self, send_id: int) -> str:
        return f"{self._base}/t/u/{self._signer.sign('unsubscribe', str(send_id))}"

    def forward(self, send_id: int) -> str:
        """The forward-to-a-friend page of the message."""
        return f"{self._base}/t/f/{self._signer.sign('forward', str(send_id))}"

    def goal_token(self, send_id: int) -> str:
        """The token a customer's site passes back to `/t/g/TOKEN` on a conversion: the
        message puts it in the links to the site (`{{ goal_token }}`), a token rather
        than a URL because the site, not the message, decides when to call."""
        return self._signer.sign("goal", str(send_id))

    def return_path(self, send_id: int, domain: str) -> str:
        """The VERP envelope sender: a DSN to it names its send."""
        return f"bounces+{self._signer.sign('bounce', str(send_id))}@{domain}"

    def unsubscribe_mailto(self, send_id: int, domain: str) -> str:
        return f"unsubscribe+{self._signer.sign('unsubscribe', str(send_id))}@{domain}"

    def send_header(self, send_id: int) -> str:
        """The value of the `X-Envoi-Send` header (found again in returned headers)."""
        return self._signer.sign("send", str(send_id))


# A campaign's recipients share most targets: encoding one costs more than a look-up.
@functools.lru_cache(maxsize=4096)
def _encode_target(target: str) -> str:
    """`target` percent-encoded but for `A-Z a-z 0-9 _ . - ~ : /` (`quote`'s result)."""
    if not target.isascii():
        return quote(target, _TARGET_SAFE)
    for character, code in _QUERY_CHARACTERS:
        if character in target:
            target = target.replace(character, code)
    if _STILL_UNSAFE.search(target):
        target = _STILL_UNSAFE.sub(lambda match: f"%{ord(match[0]):02X}", target)
    return target
