"""Signed tokens for the public URLs and addresses of a message (no I/O).

A token is `VALUE.MAC`: the value in clear (a spool id, `id-link`), and 16 base32
characters of HMAC-SHA256 over the purpose and the value. The purpose keeps a token
made for one use (an open pixel) from being replayed for another (an unsubscribe).
The alphabet (digits, lower-case letters, `.` and `-`) is safe in URL paths and in
the local part of an address, so the same token serves the VERP return path.

Hand-written rather than itsdangerous: a message carries a dozen tokens and the
delivery bar is thousands of messages a second, so this is kept to one HMAC and no
JSON or timestamps (a sent message's links must keep working for years).
"""

from __future__ import annotations

import base64
import hashlib
import hmac

MAC_BYTES = 10  # 80 bits: 16 base32 characters


class Signer:
    def __init__(self, key: str | bytes) -> None:
        self._key = key.encode() if isinstance(key, str) else key

    def _mac(self, purpose: str, value: str) -> str:
        digest = hmac.digest(self._key, f"{purpose}:{value}".encode(), hashlib.sha256)
        return base64.b32encode(digest[:MAC_BYTES]).decode().lower()

    def sign(self, purpose: str, value: str) -> str:
        return f"{value}.{self._mac(purpose, value)}"

    def unsign(self, purpose: str, token: str) -> str | None:
        """The value of a genuine token of this purpose, else None (never raises)."""
        value, dot, mac = token.rpartition(".")
        if not dot or not value:
            return None
        if not hmac.compare_digest(mac.encode(), self._mac(purpose, value).encode()):
            return None
        return value


class MessageLinks:
    """Every signed URL and address of one sent message (spool row `send_id`).

    The tracking endpoints (issue: tracking and feedback) read these paths back:
    `/t/o/` open pixel, `/t/c/` click (value `SEND-LINK`, LINK the link's index in
    the email's HTML, from 0), `/t/m/` web view ("mirror"), `/t/u/` unsubscribe.
    """

    def __init__(self, public_url: str, signer: Signer) -> None:
        self._base = public_url.rstrip("/")
        self._signer = signer

    def open(self, send_id: int) -> str:
        return f"{self._base}/t/o/{self._signer.sign('open', str(send_id))}"

    def click(self, send_id: int, link: int) -> str:
        return f"{self._base}/t/c/{self._signer.sign('click', f'{send_id}-{link}')}"

    def mirror(self, send_id: int) -> str:
        return f"{self._base}/t/m/{self._signer.sign('mirror', str(send_id))}"

    def unsubscribe(self, send_id: int) -> str:
        return f"{self._base}/t/u/{self._signer.sign('unsubscribe', str(send_id))}"

    def return_path(self, send_id: int, domain: str) -> str:
        """The VERP envelope sender: a DSN to it names its send."""
        return f"bounces+{self._signer.sign('bounce', str(send_id))}@{domain}"

    def unsubscribe_mailto(self, send_id: int, domain: str) -> str:
        return f"unsubscribe+{self._signer.sign('unsubscribe', str(send_id))}@{domain}"

    def send_header(self, send_id: int) -> str:
        """The value of the `X-Envoi-Send` header (found again in returned headers)."""
        return self._signer.sign("send", str(send_id))
