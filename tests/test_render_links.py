"""Tracked links: every http(s) link of the HTML and of the text part becomes a signed
click URL, and a click lands where the link led, even for links written from data
(loops), and never where a recipient's data would like it to.

Each click is followed the way the tracking endpoint will (`follow`): the token
verified with its target, else the literal link's URL by index.
"""

from __future__ import annotations

import re

from envoi.delivery.links import (
    DYNAMIC_CLOSE,
    DYNAMIC_OPEN,
    JINJA_CLOSE,
    JINJA_OPEN,
    LINK_CLOSE,
    LINK_OPEN,
    DynamicLinks,
    without_markers,
)
from envoi.delivery.render import CompiledMessage, Recipient
from tests.render_support import BOB, LINKS, compiled, follow, parts, render

LINKED = """<html><body>
<a href="https://a.example.com/1?x=1&amp;y=2">One</a>
<a href="mailto:help@example.com">Mail us</a> <a href="tel:+331234">Call</a>
<a href="#top">Top</a> <a href="/relative">Relative</a>
<a href="HTTP://B.example.com/2">Two</a>
<a href="{{ unsubscribe_url }}">Leave</a> <a href="{{ web_view_url }}">Web</a>
<a href="{{ product_url }}">Dynamic</a>
<a href="mailto:{{ email }}">Me</a>
<a class="x" title="t" href='https://c.example.com/3'>Three</a>
</body></html>"""


def bodies(message: CompiledMessage, recipient: Recipient) -> tuple[str, str]:
    """(text/html, text/plain) of `recipient`'s message."""
    found = parts(render(message, recipient)[1])
    return found["text/html"], found["text/plain"]


def clicks_in(text: str) -> list[str]:
    """The click URLs of a part, in order."""
    return re.findall(r"https://t\.example\.com/t/c/[0-9a-f.\-]+(?:\?u=[^\s\"'<>),]+)?", text)


def test_links_are_numbered_in_order_and_rewritten_to_click_urls() -> None:
    message = compiled(LINKED)
    # The literal links, by index: what the tracking endpoint redirects to.
    assert message.link_urls == (
        "https://a.example.com/1?x=1&y=2",
        "HTTP://B.example.com/2",
        "https://c.example.com/3",
    )
    product = "https://d.example.com/?q=a&b"
    recipient = Recipient(50, "x@example.org", {}, {"product_url": product})
    html, _ = bodies(message, recipient)
    hrefs = re.findall(r'href="([^"]*)"', html)
    assert hrefs == [
        LINKS.click(50, 0),
        "mailto:help@example.com",
        "tel:+331234",
        "#top",
        "/relative",
        LINKS.click(50, 1),
        LINKS.unsubscribe(50),
        LINKS.mirror(50),
        LINKS.click(50, 3, product),  # written by the template: after the literal links
        "mailto:x@example.org",
        LINKS.click(50, 2),
    ]
    landed = [follow(message, href, 50) for href in hrefs if "/t/c/" in href]
    assert landed == [
        "https://a.example.com/1?x=1&y=2",
        "HTTP://B.example.com/2",
        product,
        "https://c.example.com/3",
    ]
    assert follow(message, LINKS.click(50, 3), 50) is None  # no literal link 3


def test_each_link_of_a_loop_is_its_own_link_and_lands_on_its_item() -> None:
    source = """<ul>{% for item in items %}
<li><a href="{{ item.url }}">{{ item.name }}</a></li>{% endfor %}</ul>
{% if vip %}<p><a href="https://shop.example.com/vip">VIP</a></p>{% endif %}
<p><a href="https://shop.example.com/all">All</a></p>"""
    message = compiled(source)
    assert message.link_urls == ("https://shop.example.com/vip", "https://shop.example.com/all")
    items = [
        {"url": "https://x.example.com/1", "name": "A"},
        {"url": "https://x.example.com/2", "name": "B"},
        {"url": "https://x.example.com/1", "name": "A again"},
    ]
    recipient = Recipient(53, "x@example.org", {"vip": False}, {"items": items})
    html, text = bodies(message, recipient)
    found = clicks_in(html)
    assert found == [
        LINKS.click(53, 2, "https://x.example.com/1"),
        LINKS.click(53, 3, "https://x.example.com/2"),
        LINKS.click(53, 4, "https://x.example.com/1"),  # a third link, to the same place
        LINKS.click(53, 1),
    ]
    assert [follow(message, url, 53) for url in found] == [
        "https://x.example.com/1",
        "https://x.example.com/2",
        "https://x.example.com/1",
        "https://shop.example.com/all",
    ]
    assert LINKS.click(53, 0) not in html  # the VIP link was not rendered
    # The text part made from the HTML links to the same indexes.
    assert f"A ({found[0]})" in text
    assert f"B ({found[1]})" in text
    assert f"A again ({found[0]})" in text
    # Another recipient's items are numbered for them.
    other = Recipient(54, "y@example.org", {"vip": True}, {"items": items[1:2]})
    html, _ = bodies(message, other)
    assert clicks_in(html) == [
        LINKS.click(54, 2, "https://x.example.com/2"),
        LINKS.click(54, 0),
        LINKS.click(54, 1),
    ]


def test_a_written_link_that_renders_no_http_url_is_left_alone() -> None:
    message = compiled('<p><a href="{{ url }}">Go</a></p>')
    for value, expected in (("", ""), ("mailto:a@example.com", "mailto:a@example.com")):
        recipient = Recipient(52, "x@example.org", {}, {"url": value})
        html, _ = bodies(message, recipient)
        assert f'<a href="{expected}">Go</a>' in html
        assert "/t/c/" not in html


def test_recipients_data_cannot_make_a_tracked_link() -> None:
    """Marker characters in a profile value or a parameter (a signup form's name field)
    are dropped: the value renders as text, and no click URL leads to its URL."""
    evil = "https://evil.example/phish"
    forged = [
        f"{DYNAMIC_OPEN}{evil}{DYNAMIC_CLOSE}",
        f"{LINK_OPEN}0{LINK_CLOSE}",
        f"{JINJA_OPEN}0{JINJA_CLOSE}",
        f"{DYNAMIC_OPEN}0\ue006{evil}{DYNAMIC_CLOSE}",  # the marker of earlier versions
    ]
    source = (
        '<p>Hi {{ first_name }}</p><p>{{ notes[0] }} {{ extra.x }}</p><a href="{{ shop }}">S</a>'
    )
    recipient = Recipient(
        55,
        "x@example.org",
        {"first_name": "Ann" + forged[0]},
        {"notes": [forged[1] + forged[3]], "extra": {"x": forged[2]}, "shop": "https://s.example/"},
    )
    message = compiled(source, text_plain="Hi {{ first_name }} {{ notes[0] }}")
    html, text = bodies(message, recipient)
    for body in (html, text):
        assert [follow(message, url, 55) for url in clicks_in(body)] == (
            ["https://s.example/"] if body is html else []
        )
        assert not re.search("[\ue000-\ue006]", body)
    assert f"Hi Ann{evil}" in html  # shown as the text it is
    assert f"Hi Ann{evil} 00{evil}" in text
    assert without_markers({"k\ue004": ("a\ue005", 1, None)}) == {"k": ["a", 1, None]}


def test_a_click_url_cannot_be_pointed_elsewhere() -> None:
    message = compiled('<a href="{{ url }}">Go</a><a href="https://a.example.com/">A</a>')
    html, _ = bodies(message, Recipient(56, "x@example.org", {}, {"url": "https://b.example/"}))
    written, literal = clicks_in(html)
    assert follow(message, written, 56) == "https://b.example/"
    assert follow(message, written.replace("b.example", "evil.example"), 56) is None
    assert follow(message, f"{literal}?u=https://evil.example/", 56) is None
    assert follow(message, written.replace("/56-", "/57-"), 57) is None
    assert follow(message, literal, 56) == "https://a.example.com/"


def test_links_of_the_variants_own_text_are_tracked_with_the_htmls_indexes() -> None:
    text = """Hello {{ first_name }},
our sale: https://a.example.com/1?x=1&y=2, and (see https://t-only.example.com/p).
Your page: https://shop.example.com/u/{{ uid }}.
Twice: https://t-only.example.com/p
Not links: mailto:help@example.com, {{ "https://in.a.construct/" }}, {{ shop_url }},
{% raw %}https://raw.example.com/{% endraw %} http:// and https://c.example.com/3
"""
    message = compiled(LINKED, text_plain=text)
    assert message.link_urls == (
        "https://a.example.com/1?x=1&y=2",
        "HTTP://B.example.com/2",
        "https://c.example.com/3",
        "https://t-only.example.com/p",  # only in the text: after the HTML's
    )
    recipient = Recipient(57, "x@example.org", {"uid": "u7"}, {"shop_url": "https://s.example/"})
    html, plain = bodies(message, recipient)
    page = "https://shop.example.com/u/u7"
    assert plain.startswith(
        f"Hello ,\nour sale: {LINKS.click(57, 0)}, and (see {LINKS.click(57, 3)}).\n"
        f"Your page: {LINKS.click(57, 4, page)}.\n"  # written: after the literal links
        f"Twice: {LINKS.click(57, 3)}\n"
        "Not links: mailto:help@example.com, https://in.a.construct/, https://s.example/,\n"
        f"https://raw.example.com/ http:// and {LINKS.click(57, 2)}\n"
    )
    assert follow(message, LINKS.click(57, 3), 57) == "https://t-only.example.com/p"
    assert follow(message, LINKS.click(57, 4, page), 57) == page
    # The HTML's links keep their indexes (its written link, empty for this recipient,
    # is not tracked).
    assert clicks_in(html) == [LINKS.click(57, 0), LINKS.click(57, 1), LINKS.click(57, 2)]


def test_a_text_only_email_tracks_its_links() -> None:
    message = compiled(None, text_plain="Go to https://a.example.com/x!\nhttps://b.example.com")
    assert message.link_urls == ("https://a.example.com/x", "https://b.example.com")
    _, parsed = render(message)
    assert parts(parsed)["text/plain"].startswith(
        f"Go to {LINKS.click(41, 0)}!\n{LINKS.click(41, 1)}\n"
    )


def test_a_text_link_shares_the_index_of_the_htmls_written_link_to_the_same_target() -> None:
    source = '<a href="{{ a }}">A</a><a href="{{ b }}">B</a>'
    text = "A: https://x.example.com/{{ a_path }} C: https://x.example.com/{{ c_path }}"
    message = compiled(source, text_plain=text)
    values = {"a": "https://x.example.com/a", "b": "https://x.example.com/b"}
    recipient = Recipient(58, "x@example.org", {}, {**values, "a_path": "a", "c_path": "c"})
    html, plain = bodies(message, recipient)
    a, b = clicks_in(html)
    assert (a, b) == (LINKS.click(58, 0, values["a"]), LINKS.click(58, 1, values["b"]))
    assert plain.startswith(f"A: {a} C: {LINKS.click(58, 2, 'https://x.example.com/c')}\n")


def test_a_written_link_split_by_a_statement_leaves_no_marker() -> None:
    text = (
        "{% for p in ps %}https://x.example.com/{{ p }}{% if not loop.last %}, {% endif %}"
        "{% endfor %}\nBuilt by a statement: https://y.example.com/{% if ps %}vip{% endif %}"
    )
    message = compiled(None, text_plain=text)
    _, parsed = render(message, Recipient(59, "x@example.org", {}, {"ps": ["1", "2"]}))
    plain = parts(parsed)["text/plain"]
    assert not re.search("[\ue000-\ue006]", plain)
    assert [follow(message, url, 59) for url in clicks_in(plain)] == [
        "https://x.example.com/1",
        "https://x.example.com/2",
    ]
    assert "\nBuilt by a statement: https://y.example.com/vip\n" in plain  # left alone
    # Half a marker (a URL cut by a statement) is dropped, never sent.
    filler = DynamicLinks(0, lambda index, target: f"<{index}:{target}>")
    cut = f"a {DYNAMIC_OPEN}https://x.example.com/{DYNAMIC_CLOSE} b {DYNAMIC_CLOSE}c {DYNAMIC_OPEN}"
    assert filler.fill(cut, html_part=False) == "a <0:https://x.example.com/> b c "


def test_the_open_pixel_and_footer_links() -> None:
    _, message = render(compiled())
    html = parts(message)["text/html"]
    pixel = f'<img src="{LINKS.open(41)}" width="1" height="1" alt="">'
    assert pixel in html
    assert html.index(pixel) < html.index("</body>")
    assert f'href="{LINKS.mirror(41)}"' in html
    assert f'href="{LINKS.unsubscribe(41)}"' in html
    text = parts(message)["text/plain"]
    assert f"View this email in your browser: {LINKS.mirror(41)}" in text
    assert f"Unsubscribe: {LINKS.unsubscribe(41)}" in text


def test_flags_turn_off_the_footer_links_and_the_unsubscribe_headers() -> None:
    no_web = render(compiled(not_add_web_view_link=True))[1]
    assert LINKS.mirror(41) not in parts(no_web)["text/html"]
    assert LINKS.mirror(41) not in parts(no_web)["text/plain"]
    assert LINKS.unsubscribe(41) in parts(no_web)["text/html"]

    no_unsubscribe = render(compiled(not_add_unsubscr_link=True))[1]
    for body in parts(no_unsubscribe).values():
        assert LINKS.unsubscribe(41) not in body
    assert no_unsubscribe["List-Unsubscribe"] is None
    assert no_unsubscribe["List-Unsubscribe-Post"] is None
    # The pixel is there whatever the flags.
    assert LINKS.open(41) in parts(no_unsubscribe)["text/html"]


def test_a_template_with_its_own_unsubscribe_link_gets_no_second_one() -> None:
    source = '<p><a href="{{ unsubscribe_url }}">Stop these mails</a></p>'
    _, message = render(compiled(source))
    html = parts(message)["text/html"]
    assert html.count(LINKS.unsubscribe(41)) == 1
    assert html.count(LINKS.mirror(41)) == 1


def test_the_text_part_shows_links_with_the_same_tracked_urls() -> None:
    product = "https://d.example.com/"
    recipient = Recipient(51, "x@example.org", {}, {"product_url": product})
    text = parts(render(compiled(LINKED), recipient)[1])["text/plain"]
    assert f"One ({LINKS.click(51, 0)})" in text
    assert f"Two ({LINKS.click(51, 1)})" in text
    assert f"Dynamic ({LINKS.click(51, 3, product)})" in text
    assert f"Three ({LINKS.click(51, 2)})" in text
    assert "Mail us" in text
    assert "mailto:" not in text
    # A link whose text is its URL is written once.
    plain = parts(render(compiled(), BOB)[1])["text/plain"]
    assert f"Spring sale ({LINKS.click(41, 0)})" in plain
    assert f"\n{LINKS.click(41, 1)}\n" in plain


def test_a_raw_block_is_sent_as_written() -> None:
    source = (
        "<style>p { color: red }</style><p>Hi</p>"
        '{% raw %}<a href="https://raw.example.com/">{{ not a variable }}</a>{% endraw %}'
    )
    message = compiled(source)
    assert message.link_urls == ()
    html, _ = bodies(message, BOB)
    assert '<a href="https://raw.example.com/">{{ not a variable }}</a>' in html
    assert '<p style="color: red;">Hi</p>' in html
