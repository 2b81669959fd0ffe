"""What the tracking endpoints take from rendering: the web view of a message, and the
`forward_url` and `goal_token` template variables."""

from __future__ import annotations

from envoi.core.tokens import read_click
from envoi.delivery.render import BLANK_PIXEL
from tests.render_support import BOB, LINKS, SIGNER, compiled, parse, parts

WRITTEN = (
    '<html><body><p>Hi {{ first_name }}</p><a href="https://shop.example.com/{{ coupon }}">go</a>'
)


def test_web_view_is_the_html_part_with_its_links_but_no_pixel() -> None:
    message = compiled(WRITTEN + "</body></html>")
    page = message.web_view(BOB)
    assert "Hi Bob" in page
    sent = parts(parse(message.render(BOB)))["text/html"]
    # The same click URLs as the message sent (written links numbered alike).
    written = LINKS.click(BOB.send_id, 0, "https://shop.example.com/SPRING10")
    assert written in sent
    assert written in page
    assert LINKS.unsubscribe(BOB.send_id) in page
    assert LINKS.open(BOB.send_id) in sent
    assert LINKS.open(BOB.send_id) not in page
    assert BLANK_PIXEL in page


def test_web_view_of_a_text_only_message_is_preformatted_and_escaped() -> None:
    message = compiled(None, text_plain="Hi {{ first_name }} <3\nhttps://shop.example.com/b")
    page = message.web_view(BOB)
    assert "<pre" in page
    assert "Hi Bob &lt;3" in page
    assert "<title>News for Bob</title>" in page
    click = LINKS.click(BOB.send_id, 0)
    assert click in page
    assert read_click(SIGNER, click.rsplit("/", 1)[1]) is not None


def test_forward_url_and_goal_token_variables() -> None:
    html = (
        "<html><body><p>Forward: {{ forward_url }}</p>"
        '<a href="https://shop.example.com/?envoi={{ goal_token }}">shop</a></body></html>'
    )
    sent = parts(parse(compiled(html).render(BOB)))["text/html"]
    assert f"Forward: {LINKS.forward(BOB.send_id)}" in sent
    token = LINKS.goal_token(BOB.send_id)
    assert SIGNER.unsign("goal", token) == str(BOB.send_id)
    # The link to the site is a tracked link whose target holds the token.
    assert LINKS.click(BOB.send_id, 0, f"https://shop.example.com/?envoi={token}") in sent


def test_a_template_may_test_the_variables() -> None:
    message = compiled("<html><body>{% if forward_url %}forwardable{% endif %}</body></html>")
    assert "forwardable" in message.web_view(BOB)
