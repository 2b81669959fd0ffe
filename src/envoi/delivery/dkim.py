"""DKIM signatures (RFC 6376): rsa-sha256 and ed25519-sha256 (RFC 8463), relaxed/relaxed.

Signing goes through `cryptography` (OpenSSL) with canonicalisation written here:
dkimpy, which the tests use to verify every signature, signs RSA in pure Python, about
134 messages a second on one core against about 1,480 through OpenSSL; the delivery
bar is 1,000 signed messages a second. The canonicalisation is a few C-level regular
expressions over the body and the signed headers.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Sequence

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

# The headers signed, in this order (RFC 6376 5.4.1 recommends these; the List-* and
# Feedback-ID ones matter to mailbox providers' one-click unsubscribe and feedback
# loops), and how (RFC 6376 8.15, "over-signing": a name listed once more than the
# message has instances of it signs the absence of another one, so nobody can add one
# above the signed instance, which many mail readers would show instead):
# - "always": every instance, plus one absent one, even when the message has none
#   (a Reply-To or Cc added in transit breaks the signature);
# - "present": every instance, plus one absent one, when the message has the header;
# - "once": the last instance when present (Feedback-ID: a relay may add its own).
SIGNED_HEADERS: tuple[tuple[str, str], ...] = (
    ("from", "always"),
    ("reply-to", "always"),
    ("to", "always"),
    ("cc", "always"),
    ("subject", "always"),
    ("date", "present"),
    ("message-id", "present"),
    ("mime-version", "present"),
    ("content-type", "present"),
    ("content-transfer-encoding", "present"),
    ("list-unsubscribe", "always"),
    ("list-unsubscribe-post", "always"),
    ("feedback-id", "once"),
)
_SIGNING_PLAN = tuple((name, name.encode(), how) for name, how in SIGNED_HEADERS)
_SIGNED_NAMES = frozenset(key for _, key, _ in _SIGNING_PLAN)
ALGORITHMS: dict[str, str] = {"rsa": "rsa-sha256", "ed25519": "ed25519-sha256"}
RSA_BITS = 2048

_WSP_RUN = re.compile(rb"[ \t]+")
_CRLF_PAIRS_BACKWARDS = re.compile(rb"(?:\n\r)*")
_LINE_WIDTH = 76


class DkimError(ValueError):
    """A key that cannot sign (wrong type, unreadable PEM)."""


def canonical_body(body: bytes) -> bytes:
    """Relaxed body canonicalisation (RFC 6376 3.4.4): a non-empty body that does not
    end with CRLF gets one (as SMTP will add it), runs of whitespace become one space,
    whitespace at line ends goes, and empty lines at the end go. Each rewrite runs only
    when a substring test says it would change something: quoted-printable bodies
    rarely need any."""
    if body and not body.endswith(b"\r\n"):
        body += b"\r\n"
    if b"\t" in body or b"  " in body:
        body = _WSP_RUN.sub(b" ", body)
    if b" \r\n" in body:
        body = body.replace(b" \r\n", b"\r\n")
    # Empty lines at the end: the trailing CRLF pairs (read backwards from the run of
    # CR and LF that ends the body, so that a lone CR or LF stays text), but the last
    # line's own CRLF.
    tail = body[len(body.rstrip(b"\r\n")) :]
    pairs = _CRLF_PAIRS_BACKWARDS.match(tail[::-1])
    kept = body[: len(body) - (pairs.end() if pairs else 0)]
    return kept + b"\r\n" if kept else b""


def canonical_header(raw: bytes) -> bytes:
    """Relaxed header canonicalisation (RFC 6376 3.4.2) of one `Name: value` field:
    name lower-cased, value unfolded, whitespace runs to one space, none around the
    colon or at the end; ends with CRLF."""
    name, _, value = raw.partition(b":")
    if b"\r\n" in value:  # in a field, a CRLF is always folding
        value = value.replace(b"\r\n", b"")
    if b"\t" in value or b"  " in value:
        value = _WSP_RUN.sub(b" ", value)
    return name.rstrip(b" \t").lower() + b":" + value.strip(b" \t") + b"\r\n"


def split_message(message: bytes) -> tuple[list[bytes], bytes]:
    """(header fields, each with its folded lines and without its final CRLF, body)."""
    head, separator, body = message.partition(b"\r\n\r\n")
    if not separator:
        head, body = message.removesuffix(b"\r\n"), b""
    fields: list[bytes] = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += b"\r\n" + line
        elif line:
            fields.append(line)
    return fields, body


def generate_key(algorithm: str) -> tuple[str, str]:
    """A new key pair: (PKCS#8 PEM of the private key, the DNS TXT record's value).
    `algorithm` is "rsa" (2048 bits) or "ed25519"."""
    private: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    if algorithm == "rsa":
        private = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    elif algorithm == "ed25519":
        private = ed25519.Ed25519PrivateKey.generate()
    else:
        raise DkimError(f"unknown algorithm {algorithm!r}: use rsa or ed25519")
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return pem, dns_record(pem)


def _load(private_key_pem: str) -> rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(private_key_pem.encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise DkimError(f"unreadable private key: {exc}") from None
    if not isinstance(key, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        raise DkimError("a DKIM key is RSA or Ed25519")
    return key


def dns_record(private_key_pem: str) -> str:
    """The TXT record value (`v=DKIM1; k=rsa; p=...`) that publishes the public half."""
    key = _load(private_key_pem)
    if isinstance(key, rsa.RSAPrivateKey):
        der = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return f"v=DKIM1; k=ed25519; p={base64.b64encode(raw).decode()}"


def record_problem(published: Sequence[str], expected: str) -> str | None:
    """None when one of the TXT records `published` at a key's DNS name (each record's
    strings joined) publishes the key of `expected` (its `dns_record` value); else what
    a receiver would find wrong, in words."""
    if not published:
        return "no TXT record is published there"
    want = _tags(expected)
    found = [_tags(record) for record in published]
    keys = [tags for tags in found if "p" in tags]
    if not keys:
        return "the TXT record there is not a DKIM key record (no p= tag)"
    for tags in keys:
        if tags["p"] == want["p"] and tags.get("k", "rsa") == want.get("k", "rsa"):
            return None
    if any(tags["p"] == "" for tags in keys):
        return "the key published there is revoked (empty p=)"
    return "the TXT record there publishes another key"


def _tags(record: str) -> dict[str, str]:
    """The tag=value list of a DKIM key record (RFC 6376 3.6.1); white space inside a
    value (the base64 of p=, cut by a DNS provider) does not count."""
    tags: dict[str, str] = {}
    for item in record.split(";"):
        name, equals, value = item.partition("=")
        if equals:
            tags[name.strip().lower()] = "".join(value.split())
    return tags


def zone_line(domain: str, selector: str, value: str) -> str:
    """The record as a zone file line, the value cut into strings of at most 255
    characters (RFC 1035's limit for one TXT string)."""
    chunks = " ".join(f'"{value[i : i + 255]}"' for i in range(0, len(value), 255))
    return f"{selector}._domainkey.{domain}. IN TXT ( {chunks} )"


class DkimSigner:
    """Signs messages for one domain with one selector's key (loaded once)."""

    def __init__(self, domain: str, selector: str, private_key_pem: str) -> None:
        self.domain = domain
        self.selector = selector
        self._key = _load(private_key_pem)
        self.algorithm = (
            "rsa-sha256" if isinstance(self._key, rsa.RSAPrivateKey) else "ed25519-sha256"
        )

    def sign(self, message: bytes, now: float | None = None) -> bytes:
        """`message` (CRLF line ends) with a DKIM-Signature header field prepended."""
        fields, body = split_message(message)
        body_hash = base64.b64encode(hashlib.sha256(canonical_body(body)).digest()).decode()
        signed, names = self._signed_fields(fields)
        stamp = int(time.time() if now is None else now)
        head = _fold_tags(
            [
                "v=1",
                f"a={self.algorithm}",
                "c=relaxed/relaxed",
                f"d={self.domain}",
                f"s={self.selector}",
                f"t={stamp}",
                f"h={':'.join(names)}",
                f"bh={body_hash}",
            ]
        )
        data = b"".join(signed) + canonical_header(f"{head}b=".encode())[:-2]
        signature = base64.b64encode(self._sign(data)).decode()
        return f"{head}b={_fold_value(signature)}\r\n".encode() + message

    def _signed_fields(self, fields: list[bytes]) -> tuple[list[bytes], list[str]]:
        """Canonical fields to sign and the `h=` names, as SIGNED_HEADERS says. A name
        listed n times signs its last n instances, from the bottom up, and an absent
        one past them (RFC 6376 5.4.2)."""
        instances: dict[bytes, list[bytes]] = {}
        for field in fields:
            field_name = field.split(b":", 1)[0].strip().lower()
            if field_name in _SIGNED_NAMES:
                instances.setdefault(field_name, []).append(field)
        signed: list[bytes] = []
        names: list[str] = []
        for name, key, how in _SIGNING_PLAN:
            present = instances.get(key)
            if present is None:
                if how == "always":
                    names.append(name)
                continue
            for field in reversed(present[-1:] if how == "once" else present):
                signed.append(canonical_header(field))
                names.append(name)
            if how != "once":
                names.append(name)
        return signed, names

    def _sign(self, data: bytes) -> bytes:
        if isinstance(self._key, rsa.RSAPrivateKey):
            return self._key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        # RFC 8463: Ed25519 signs the SHA-256 digest of the canonical data.
        return self._key.sign(hashlib.sha256(data).digest())


def _fold_tags(tags: list[str]) -> str:
    """`DKIM-Signature: tag; tag; ...; ` folded between tags to lines of about 76."""
    lines: list[str] = []
    line = "DKIM-Signature:"
    for tag in tags:
        piece = f" {tag};"
        if len(line) + len(piece) > _LINE_WIDTH and line != "DKIM-Signature:":
            lines.append(line)
            line = "\t" + piece[1:]
        else:
            line += piece
    lines.append(line)
    return "\r\n".join(lines) + "\r\n\t"


def _fold_value(value: str) -> str:
    """The base64 signature cut into lines of at most 72 (folding whitespace inside b=
    is ignored by verifiers, RFC 6376 3.5)."""
    return "\r\n\t".join(value[i : i + 72] for i in range(0, len(value), 72))
