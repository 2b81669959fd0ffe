"""Signed tokens: what a recipient's link or a bounce carries back, and what a forger
cannot make."""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import parse_qs, urlsplit

import pytest

from envoi.core.tokens import Click, MessageLinks, Signer, read_click


def test_a_token_round_trips_and_is_plain_hmac_sha256() -> None:
    signer = Signer("k" * 100)  # longer than a SHA-256 block: hashed first, as RFC 2104 says
    token = signer.sign("open", "42")
    value, _, mac = token.partition(".")
    assert value == "42"
    expected = hmac.digest(b"k" * 100, b"open:42", hashlib.sha256)[:10].hex()
    assert mac == expected
    assert signer.unsign("open", token) == "42"


def test_altered_foreign_or_reused_tokens_are_refused() -> None:
    signer = Signer("secret")
    token = signer.sign("click", "42-3")
    assert signer.unsign("click", token.replace("42-3", "43-3")) is None  # another send
    assert signer.unsign("click", token[:-1] + ("0" if token[-1] != "0" else "1")) is None
    assert signer.unsign("unsubscribe", token) is None  # made for a click, not an unsubscribe
    assert Signer("other secret").unsign("click", token) is None
    for junk in ("", ".", "42", "42.", ".abc", "a.b.c"):
        assert signer.unsign("click", junk) is None


def test_message_links_are_urls_and_addresses_of_one_send() -> None:
    signer = Signer("secret")
    links = MessageLinks("https://mail.example.com/", signer)
    assert links.open(7).startswith("https://mail.example.com/t/o/7.")
    click = links.click(7, 2)
    assert click.startswith("https://mail.example.com/t/c/7-2.")
    assert signer.unsign("click", click.rsplit("/", 1)[1]) == "7-2"
    verp = links.return_path(7, "bounces.example.com")
    local, _, domain = verp.partition("@")
    assert domain == "bounces.example.com"
    assert signer.unsign("bounce", local.removeprefix("bounces+")) == "7"
    assert local.replace("+", "").replace(".", "").isalnum()  # safe in a local part


def _split(url: str) -> tuple[str, str | None]:
    """(token, decoded `u`) of a click URL, as the tracking endpoint reads them."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    return parts.path.rsplit("/", 1)[1], query["u"][0] if "u" in query else None


def test_a_written_links_click_url_carries_its_target_under_the_mac() -> None:
    signer = Signer("secret")
    links = MessageLinks("https://mail.example.com", signer)
    target = "https://shop.example.com/p?id=1&q=a b+c#top/ü%20"
    url = links.click(7, 12, target)
    assert url.startswith("https://mail.example.com/t/c/7-12.")
    token, carried = _split(url)
    assert carried == target  # percent-encoded: any query parser decodes it back exactly
    assert not {"&", "#", '"', "<", " "} & set(url.split("?", 1)[1])  # safe in HTML and text
    assert read_click(signer, token, carried) == Click(7, 12, target)
    # The MAC covers purpose, value and target: it is HMAC-SHA256 as documented.
    expected = hmac.digest(b"secret", f"click+target:7-12\n{target}".encode(), hashlib.sha256)
    assert token == f"7-12.{expected[:10].hex()}"
    # A literal link's URL is unchanged: no target, the endpoint looks the link up by index.
    literal_token, none = _split(links.click(7, 2))
    assert none is None
    assert read_click(signer, literal_token) == Click(7, 2, None)


def test_nobody_can_make_a_click_url_to_a_target_of_their_choice() -> None:
    signer = Signer("secret")
    links = MessageLinks("https://mail.example.com", signer)
    token, target = _split(links.click(7, 12, "https://shop.example.com/a"))
    assert target is not None
    assert read_click(signer, token, "https://evil.example/") is None  # another target
    assert read_click(signer, token, target + "x") is None
    assert read_click(signer, token) is None  # the target left out
    literal, _ = _split(links.click(7, 2))
    assert read_click(signer, literal, "https://evil.example/") is None  # `u` added
    assert read_click(Signer("other"), token, target) is None
    # Only `SEND-LINK` values of ASCII digits are clicks.
    for value in ("7", "7-", "-2", "a-2", "7-²", "7-2-3"):
        assert read_click(signer, signer.sign("click", value)) is None
    # A value cannot smuggle a target into a plain token, nor the other way round.
    with pytest.raises(ValueError, match="line feed"):
        signer.sign("click", "7-2\nhttps://evil.example/", "x")
    bound = signer.sign("click", "7-2", "https://evil.example/")
    assert signer.unsign("click", bound) is None
    assert signer.unsign("click", bound.replace("7-2", "7-2\nhttps://evil.example/")) is None
