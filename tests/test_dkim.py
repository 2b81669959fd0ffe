"""DKIM signing: every signature envoi makes is verified by dkimpy against the DNS
record envoi printed for the key, for both algorithms, for non-ASCII and long-header
messages, and fails once a header is added in transit. Keys in the store and
`envoi dkim`: test_dkim_keys.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import dkim  # type: ignore[import-untyped]  # dkimpy ships no type information
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

import envoi.db.models  # noqa: F401 - every table mapped, so Email rows can be built
from envoi.core.tokens import MessageLinks, Signer
from envoi.delivery.dkim import (
    DkimSigner,
    canonical_body,
    canonical_header,
    generate_key,
    record_problem,
)
from envoi.delivery.render import MessageContext, Recipient, compile_message
from envoi.emails.models import Email, EmailContent

ALGORITHMS = ("rsa", "ed25519")
LINKS = MessageLinks("https://t.example.com", Signer("test-secret"))
CONTEXT = MessageContext(1, 12, "S_12", "L", ("news",), "bounces.example.com")
KEYS = {algorithm: generate_key(algorithm) for algorithm in ALGORITHMS}


def dns_for(txt: str, name: str = "sel._domainkey.example.com.") -> Callable[..., bytes]:
    """A resolver that knows one TXT record, as dkimpy's `dnsfunc` wants it."""

    def lookup(query: bytes | str, timeout: int = 5) -> bytes:  # noqa: ARG001 - passed by name
        asked = query.decode() if isinstance(query, bytes) else query
        return txt.encode() if asked == name else b""

    return lookup


def verify(message: bytes, algorithm: str) -> bool:
    return bool(dkim.verify(message, dnsfunc=dns_for(KEYS[algorithm][1])))


def signer(algorithm: str) -> DkimSigner:
    return DkimSigner("example.com", "sel", KEYS[algorithm][0])


def rendered(
    subject: str, html: str, from_address: str, context: MessageContext = CONTEXT
) -> bytes:
    content = EmailContent(language="", subject=subject, text_html=html)
    email = Email(
        id=1,
        project_id=1,
        from_address=from_address,
        not_add_unsubscr_link=False,
        not_add_web_view_link=False,
        contents=[content],
    )
    compiled = compile_message(email, content, context, LINKS)
    return compiled.render(Recipient(77, "reader@example.org", {"first_name": "Anna"}, {}))


MESSAGES = {
    "ascii": rendered("Hello {{ first_name }}", "<p>Hi {{ first_name }}</p>", "news@example.com"),
    "non-ascii": rendered(
        "Привет, {{ first_name }}! 春のセール 🎉",
        "<p>Здравствуйте, {{ first_name }} — 你好 🎉</p>\t  <p>trailing   </p>",
        "Магазин «Весна» <news@example.com>",
    ),
    "long headers": rendered(
        " ".join(["A very long subject line that goes on"] * 12) + " {{ first_name }}",
        "<p>" + "word " * 500 + "</p>",
        "An Extremely Long Display Name For A Sender, With Commas, Inc. <news@example.com>",
        MessageContext(1, 12, "S_12", "L", ("x" * 300, "Ärger"), "bounces.example.com"),
    ),
}


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("kind", list(MESSAGES))
def test_dkimpy_verifies_every_signature(algorithm: str, kind: str) -> None:
    signed = signer(algorithm).sign(MESSAGES[kind])
    assert signed.endswith(MESSAGES[kind])
    assert verify(signed, algorithm)
    header = signed.split(b"\r\n\r\n", 1)[0].split(b"\r\nFrom:", 1)[0].decode()
    assert f"a={algorithm}-sha256;" in header
    assert "c=relaxed/relaxed;" in header
    assert "d=example.com;" in header
    assert "s=sel;" in header
    names = re.search(r"h=([^;]+);", header)
    assert names is not None
    # Over-signed (RFC 6376 8.15): each header once more than present, and Reply-To
    # and Cc, which the message lacks, once: none can be added without breaking it.
    assert names[1].replace("\r\n\t", "").split(":") == [
        *("from", "from", "reply-to", "to", "to", "cc", "subject", "subject"),
        *("date", "date", "message-id", "message-id", "mime-version", "mime-version"),
        *("content-type", "content-type", "list-unsubscribe", "list-unsubscribe"),
        *("list-unsubscribe-post", "list-unsubscribe-post", "feedback-id"),
    ]
    # b= is folded: no line of the signature header is long.
    assert max(len(line) for line in header.split("\r\n")) <= 998
    b_lines = header.split("b=", 2)[-1].split("\r\n")
    assert len(b_lines) > 1 or algorithm == "ed25519"
    assert all(len(line) <= 78 for line in b_lines)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_a_changed_message_fails_verification(algorithm: str) -> None:
    signed = signer(algorithm).sign(MESSAGES["ascii"])
    assert not verify(signed.replace(b"Hi Anna", b"Hi Mallory"), algorithm)
    assert not verify(signed.replace(b"Subject: Hello Anna", b"Subject: Hello Eve"), algorithm)
    # Relaxed canonicalisation tolerates what relays do to whitespace and folding.
    relayed = signed.replace(b"Subject: Hello Anna", b"Subject:   Hello\r\n\t Anna")
    assert verify(relayed, algorithm)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_headers_added_in_transit_break_the_signature(algorithm: str) -> None:
    signed = signer(algorithm).sign(MESSAGES["ascii"])
    for added in (
        b"From: Bank <alerts@bank.example>\r\n",  # above the signed From: shown instead
        b"Subject: Urgent\r\n",
        b"Reply-To: thief@evil.example\r\n",
        b"Cc: more@evil.example\r\n",
        b"List-Unsubscribe: <https://evil.example/u>\r\n",
        b"Content-Type: text/plain\r\n",
    ):
        assert not verify(added + signed, algorithm), added
    # What relays add is not signed.
    assert verify(b"Received: from relay.example by mx.example\r\n" + signed, algorithm)
    # Content-Transfer-Encoding is signed where the message has it at the top level.
    single = rendered("Hi", "", "news@example.com")
    assert b"\r\nContent-Transfer-Encoding: quoted-printable\r\n" in single
    one_part = signer(algorithm).sign(single)
    assert verify(one_part, algorithm)
    assert not verify(one_part.replace(b"quoted-printable", b"8bit", 1), algorithm)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_only_present_headers_are_signed_and_every_instance_counts(algorithm: str) -> None:
    message = (
        b"From: a@example.com\r\nSubject: first\r\nX-Other: y\r\nSubject: second\r\n"
        b"\r\nbody line  with  spaces \t\r\n\r\n\r\n"
    )
    signed = signer(algorithm).sign(message)
    assert b"h=from:from:reply-to:to:cc:subject:subject:subject:list-unsubscribe:" in signed
    assert verify(signed, algorithm)
    assert not verify(signed.replace(b"Subject: first", b"Subject: other"), algorithm)
    assert verify(signer(algorithm).sign(b"From: a@example.com\r\n\r\n"), algorithm)
    assert verify(signer(algorithm).sign(b"From: a@example.com\r\n"), algorithm)
    # A body without its final CRLF is signed as SMTP will carry it: with one.
    unterminated = signer(algorithm).sign(b"From: a@example.com\r\n\r\na\r\n\r\n \t")
    assert verify(unterminated + b"\r\n", algorithm)


def test_relaxed_canonicalisation() -> None:
    assert canonical_body(b"a  b \t\r\nc\t\r\n\r\n\r\n") == b"a b\r\nc\r\n"
    assert canonical_body(b"no newline ") == b"no newline\r\n"
    assert canonical_body(b"\r\n\r\n") == b""
    assert canonical_body(b"") == b""
    # RFC 6376 3.4.4: the CRLF a body lacks is added before empty lines are removed.
    assert canonical_body(b"a\r\n\r\n \t") == b"a\r\n"
    assert canonical_body(b" \t") == b""
    # A lone LF is text, not a line end.
    assert canonical_body(b"a\n\r\n\r\n") == b"a\n\r\n"
    assert canonical_header(b"SubJect :  Hello\r\n\t  World  ") == b"subject:Hello World\r\n"


def test_generated_keys_and_their_dns_records() -> None:
    rsa_pem, rsa_txt = KEYS["rsa"]
    assert rsa_pem.startswith("-----BEGIN PRIVATE KEY-----")  # PKCS#8
    key = serialization.load_pem_private_key(rsa_pem.encode(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    assert key.key_size == 2048
    assert re.fullmatch(r"v=DKIM1; k=rsa; p=[A-Za-z0-9+/]+=*", rsa_txt)
    ed_pem, ed_txt = KEYS["ed25519"]
    assert ed_pem.startswith("-----BEGIN PRIVATE KEY-----")
    assert re.fullmatch(r"v=DKIM1; k=ed25519; p=[A-Za-z0-9+/]{43}=", ed_txt)
    with pytest.raises(ValueError, match="unknown algorithm"):
        generate_key("dsa")
    with pytest.raises(ValueError, match="unreadable private key"):
        DkimSigner("example.com", "sel", "not a key")


def test_a_published_record_is_recognised_as_the_key_or_not() -> None:
    txt = KEYS["rsa"][1]
    p = txt.split("p=", 1)[1]
    # As DNS providers publish it: strings cut anywhere, spaces in the base64, tags in
    # any order, other TXT records beside it.
    split = f"v=DKIM1;k=rsa;  t=s; p={p[:100]} {p[100:]}"
    assert record_problem(["google-site-verification=x", split], txt) is None
    assert record_problem([f"p={p}"], txt) is None  # k= defaults to rsa
    assert record_problem([], txt) == "no TXT record is published there"
    assert "not a DKIM key record" in (record_problem(["v=spf1 -all"], txt) or "")
    assert "revoked" in (record_problem(["v=DKIM1; k=rsa; p="], txt) or "")
    assert "another key" in (record_problem([KEYS["ed25519"][1]], txt) or "")
    assert "another key" in (record_problem([f"v=DKIM1; k=ed25519; p={p}"], txt) or "")
