"""The templates made ready once per campaign: CSS inlined, links found and marked.

Jinja constructs are first replaced by tokens (`protect`), so that the template can go
through an HTML parser: css-inline's html5ever, for inlining. Statements between
elements travel as HTML comments, so that `{% for %}` inside a `<table>` is not moved
out of it by the parser; if the parser dropped or reordered any token anyway, the
template is used without inlining rather than broken.

Links come in two kinds (docs/rendering.md):

- A *literal* link, an `<a href>` whose http(s) URL is written in the template, is
  numbered at compile time: 0, 1, ... in document order, then the http(s) URLs of the
  variant's own text part that the HTML does not have (`track_text_links`; the same
  URL keeps the HTML's index). Its href becomes the template variable `_envoi_link_N`
  (`as_variables`), where the renderer puts the recipient's signed click URL, so a
  tracked link costs nothing more than any variable. The tracking endpoint finds its
  URL by index (`CompiledMessage.link_urls`).
- A *written* link, whose URL the template writes (`href="{{ item.url }}"`), is
  wrapped in a dynamic marker. Per recipient, `DynamicLinks.fill` numbers each one that
  rendered to an http(s) URL after the literal links, in order of occurrence (so the
  items of a loop are distinct links), and puts a click URL there that carries its
  target, signed (`MessageLinks.click(send, link, target)`).

Tokens and markers are characters of Unicode's private use area, which neither
templates nor html5ever's serialiser produce; the renderer removes them from every
recipient value (`without_markers`), so a recipient's data cannot make a marker, and
thus cannot make a tracked link to a target of its choice.
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import css_inline

log = logging.getLogger(__name__)

# A Jinja construct while the template is being processed as HTML.
JINJA_OPEN = "\ue000"
JINJA_CLOSE = "\ue001"
LINK_OPEN = "\ue002"
LINK_CLOSE = "\ue003"
DYNAMIC_OPEN = "\ue004"
DYNAMIC_CLOSE = "\ue005"
MARKERS = JINJA_OPEN + JINJA_CLOSE + LINK_OPEN + LINK_CLOSE + DYNAMIC_OPEN + DYNAMIC_CLOSE
# Taken out of recipients' values: the markers and U+E006, reserved with them.
RESERVED = MARKERS + "\ue006"
LINK_VARIABLE = "_envoi_link_{}"
_NO_MARKERS = str.maketrans("", "", RESERVED)
_NO_DYNAMIC = str.maketrans("", "", DYNAMIC_OPEN + DYNAMIC_CLOSE)

_TOKEN = re.compile(f"{JINJA_OPEN}(\\d+){JINJA_CLOSE}")
# An `<a>` start tag as html5ever serialises it, or as an author wrote it (fallback).
_ANCHOR = re.compile(r"""<a(?=[\s/>])(?:"[^"]*"|'[^']*'|[^'">])*>""", re.IGNORECASE)
_HREF = re.compile(
    r"""(?P<head>[\s"'/]href\s*=\s*)(?:"(?P<dq>[^"]*)"|'(?P<sq>[^']*)'|(?P<bare>[^\s"'>]+))""",
    re.IGNORECASE,
)
_TRACKABLE = re.compile(r"\s*https?://", re.IGNORECASE)
# The links envoi itself puts in a message are never click-tracked.
_OWN_LINK = re.compile(r"\{\{-?\s*(?:unsubscribe_url|web_view_url|forward_url)\s*-?\}\}")
# A target with a control character in it (a CR LF from data) is not made a redirect.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# An http(s) URL in plain text: up to white space, `<`, `>` or `"`, possibly with Jinja
# constructs in it.
_TEXT_URL = re.compile(
    rf"https?://(?:[^\s<>\"{MARKERS}]|{JINJA_OPEN}\d+{JINJA_CLOSE})+", re.IGNORECASE
)
# Punctuation that ends a sentence rather than a URL written in it.
_TRAILING = ".,;:!?'\""
_LINK_MARKER = re.compile(f"{LINK_OPEN}(\\d+){LINK_CLOSE}")

# A Jinja construct: a whole `{% raw %}` block (its text is not template text, and
# must come out as written), `{{ ... }}`, `{% ... %}` (quoted strings may hold `}}` or
# `%}`) or `{# ... #}`.
_CONSTRUCT = re.compile(
    r"\{%-?\s*raw\s*-?%\}.*?\{%-?\s*endraw\s*-?%\}"
    r"""|\{\{(?:"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[^"'}]|\}(?!\}))*\}\}"""
    r"""|\{%(?:"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[^"'%]|%(?!\}))*%\}"""
    r"|\{#.*?#\}",
    re.DOTALL,
)
_TAG_BODY = r"""(?:"[^"]*"|'[^']*'|[^'">])*>"""
# Markup in which a token is not between elements: comments, tags, raw-text elements.
_MARKUP_OR_TOKEN = re.compile(
    r"(?P<markup><!--.*?-->"
    rf"|<(?P<raw>style|script|title|textarea|xmp)\b{_TAG_BODY}.*?</(?P=raw)\s*>"
    rf"|<[A-Za-z/!?]{_TAG_BODY})"
    rf"|(?P<token>{JINJA_OPEN}(?P<number>\d+){JINJA_CLOSE})",
    re.DOTALL | re.IGNORECASE,
)
_COMMENTED_TOKEN = re.compile(f"<!--({JINJA_OPEN}\\d+{JINJA_CLOSE})-->")
_JINJA_START = re.compile(r"\{(?=[{%#])")
_DOCTYPE = re.compile(r"<!DOCTYPE[^>]*>", re.IGNORECASE)
_INLINER = css_inline.CSSInliner(
    keep_style_tags=False,
    keep_at_rules=True,  # @media rules cannot be inlined: they stay in a <style>
    keep_link_tags=True,
    load_remote_stylesheets=False,  # never fetch URLs named by a user's template
)


@dataclass(frozen=True)
class Link:
    """One literal tracked link: its index and its URL."""

    index: int
    url: str


def is_trackable(url: str) -> bool:
    """An http(s) URL: what a click-tracking redirect may lead to."""
    return _TRACKABLE.match(url) is not None


def protect(source: str) -> tuple[str, list[str]]:
    """`source` with each Jinja construct replaced by a token, and the constructs."""
    constructs: list[str] = []

    def replace(match: re.Match[str]) -> str:
        constructs.append(match[0])
        return f"{JINJA_OPEN}{len(constructs) - 1}{JINJA_CLOSE}"

    return _CONSTRUCT.sub(replace, source), constructs


def restore(text: str, constructs: Sequence[str]) -> str:
    """Put the Jinja constructs back in place of their tokens."""
    return _TOKEN.sub(lambda match: constructs[int(match[1])], text)


def link_marker(index: int) -> str:
    return f"{LINK_OPEN}{index}{LINK_CLOSE}"


def rewrite_links(source: str, constructs: Sequence[str]) -> tuple[str, list[Link]]:
    """Mark the href of every trackable `<a>` of `source` (HTML with Jinja tokens);
    return the new source and the literal links in document order.

    Trackable: a literal http(s) URL (a literal link, replaced by its marker), or a
    value built by the template (a written link, wrapped in a dynamic marker) unless it
    starts with literal text that is not http(s) (`mailto:{{ email }}`) or is envoi's
    own `{{ unsubscribe_url }}` / `{{ web_view_url }}`. Anchors, mailto:, tel: and
    relative URLs are left alone.
    """
    links: list[Link] = []

    def replace_href(match: re.Match[str]) -> str:
        raw = match["dq"] if match["dq"] is not None else match["sq"] or match["bare"] or ""
        if JINJA_OPEN not in raw:
            value = html.unescape(raw)
            if not _TRACKABLE.match(value):
                return match[0]
            links.append(Link(len(links), value.strip()))
            return f'{match["head"]}"{link_marker(len(links) - 1)}"'
        template_text = restore(raw, constructs)
        literal_head = raw.split(JINJA_OPEN, 1)[0]
        if _OWN_LINK.fullmatch(template_text.strip()) or (
            literal_head.strip() and not _TRACKABLE.match(literal_head)
        ):
            return match[0]
        quote = "'" if match["sq"] is not None else '"'  # the value may hold the other one
        return f"{match['head']}{quote}{DYNAMIC_OPEN}{raw}{DYNAMIC_CLOSE}{quote}"

    def replace_anchor(match: re.Match[str]) -> str:
        # Only the first href of a tag counts, as in a browser.
        return _HREF.sub(replace_href, match[0], count=1)

    return _ANCHOR.sub(replace_anchor, source), links


def track_text_links(source: str, known: Sequence[str]) -> tuple[str, list[str]]:
    """The text template `source` (a variant's own text/plain) with its http(s) URLs
    tracked, and the URLs of the literal links: `known` (the HTML's), then the text's
    own. A URL written as such keeps the index of the same URL in `known`, or gets the
    next one; a URL with Jinja expressions in it (`https://shop.example.com/p/{{ id }}`)
    becomes a written link. Left alone: URLs inside Jinja constructs (`{{ "https://..."
    }}`, a variable that holds one, `{% raw %}`), a URL that a statement builds
    (`https://x.example.com/{% if a %}a{% endif %}`), mailto: and tel:."""
    protected, constructs = protect(source)
    urls = list(known)
    index_of: dict[str, int] = {}
    for index, url in enumerate(urls):
        index_of.setdefault(url, index)

    def replace(match: re.Match[str]) -> str:
        url = _url_in_text(match[0], constructs)
        if url is None or not url.partition("://")[2]:
            return match[0]
        rest = match[0][len(url) :]
        if JINJA_OPEN in url:
            return f"{DYNAMIC_OPEN}{url}{DYNAMIC_CLOSE}{rest}"
        index = index_of.get(url)
        if index is None:
            index = index_of[url] = len(urls)
            urls.append(url)
        return link_marker(index) + rest

    marked = _TEXT_URL.sub(replace, protected)
    return as_variables(restore(marked, constructs)), urls


def _url_in_text(found: str, constructs: Sequence[str]) -> str | None:
    """The URL a `_TEXT_URL` match starts with: without the punctuation of the sentence
    around it (a `)` stays when the URL opened one), and up to a Jinja statement or
    comment (`{% if not loop.last %}` after it), as a marker cannot span a statement.
    None when URL text follows the statement: the statement builds the URL."""
    for token in _TOKEN.finditer(found):
        if not constructs[int(token[1])].startswith("{{"):
            if _TOKEN.sub("", found[token.end() :]).strip(_TRAILING + ")"):
                return None
            found = found[: token.start()]
            break
    while found and (
        found[-1] in _TRAILING or (found[-1] == ")" and found.count(")") > found.count("("))
    ):
        found = found[:-1]
    return found


def as_variables(source: str) -> str:
    """Template text with each literal link marker as its `_envoi_link_N` variable."""
    return _LINK_MARKER.sub(lambda match: "{{ " + LINK_VARIABLE.format(match[1]) + " }}", source)


def without_markers(value: Any) -> Any:
    """A recipient's value (str, or lists and dicts of them, as JSON gives) without the
    private-use characters of the markers: data can never make a tracked link."""
    if isinstance(value, str):
        # An ASCII string holds no marker: the common case costs one C-level check.
        return value if value.isascii() else value.translate(_NO_MARKERS)
    if isinstance(value, dict):
        # ASCII strings, most keys and values, are tested here rather than in a call.
        return {
            (key if type(key) is str and key.isascii() else without_markers(key)): (
                item if type(item) is str and item.isascii() else without_markers(item)
            )
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [without_markers(item) for item in value]
    return value


class DynamicLinks:
    """The written links of one recipient's message, numbered from `first` (the number
    of literal links) in order of occurrence, each made a click URL that carries its
    target: `click(index, target)` is `MessageLinks.click(send, index, target)`."""

    def __init__(self, first: int, click: Callable[[int, str], str]) -> None:
        self._next = first
        self._click = click
        self._first_url: dict[str, str] = {}  # target -> the click URL of its first link

    def fill(self, text: str, *, html_part: bool) -> str:
        """`text`, a rendered part, with each written link that rendered to an http(s)
        URL made its click URL; one that did not (an empty variable, a mailto:) is left
        as rendered. In the HTML (`html_part`), every occurrence is a new link; in the
        text part, a target met before (in the HTML) keeps its index."""
        # Split at the opening markers rather than a regular expression's sub with a
        # callback: the same pairs (an opening marker, text without markers, a closing
        # one), for about half the cost per link.
        pieces = text.split(DYNAMIC_OPEN)
        out = [pieces[0]]
        stray = DYNAMIC_CLOSE in pieces[0]
        for piece in pieces[1:]:
            rendered, close, rest = piece.partition(DYNAMIC_CLOSE)
            if not close:  # an opening marker without its closing one
                out.append(piece)
                stray = True
                continue
            out.append(self._url(rendered, html_part))
            if rest:
                out.append(rest)
                stray = stray or DYNAMIC_CLOSE in rest
        filled = "".join(out)
        # A marker split by a statement (a URL cut by `{% if %}` in a loop) leaves a
        # stray half: never sent.
        if stray:
            filled = filled.translate(_NO_DYNAMIC)
        return filled

    def _url(self, rendered: str, html_part: bool) -> str:
        """The click URL for one written link's rendered value, or the value itself
        when it is no http(s) URL."""
        target = html.unescape(rendered) if html_part and "&" in rendered else rendered
        target = target.strip()
        if not (target.startswith(("https://", "http://")) or _TRACKABLE.match(target)):
            return rendered
        # isprintable(): no control character, in C; else the exact test.
        if not target.isprintable() and _CONTROL.search(target):
            return rendered
        url = None if html_part else self._first_url.get(target)
        if url is None:
            url = self._click(self._next, target)
            self._next += 1
            self._first_url.setdefault(target, url)
        return url


def inline_css(protected: str, constructs: Sequence[str]) -> str:
    """`protected` (from `protect`) with its CSS inlined, tokens intact; `protected`
    itself when the HTML parser would lose or move a token, or could not read the CSS.

    A value written by Jinja inside a `<style>` (`color: {{ colour }}`) is copied to
    every element its rule matches, so its token may appear any number of times; a
    statement there (`{% if %}` around a rule) cannot survive inlining at all."""
    in_css: set[int] = set()

    def prepare(match: re.Match[str]) -> str:
        if (match["raw"] or "").lower() == "style":
            in_css.update(int(number) for number in _TOKEN.findall(match[0]))
        number = match["number"]
        if number is not None and constructs[int(number)][1] in "%#":
            return f"<!--{match[0]}-->"
        return match[0]

    prepared = _MARKUP_OR_TOKEN.sub(prepare, protected)
    if any(constructs[number][1] != "{" for number in in_css):
        log.warning("css not inlined: a Jinja statement inside <style>")
        return protected
    try:
        inlined = _INLINER.inline(prepared)
    except ValueError as exc:  # css_inline.InlineError
        log.warning("css not inlined", extra={"reason": str(exc)})
        return protected
    inlined = _COMMENTED_TOKEN.sub(r"\1", inlined)
    # A token where an attribute name was expected (`<input {% if c %}checked{% endif %}>`)
    # came back as `TOKEN...=""`: the empty value was not in the template.
    inlined = inlined.replace(f'{JINJA_CLOSE}=""', JINJA_CLOSE)
    order = [int(n) for n in _TOKEN.findall(inlined) if int(n) not in in_css]
    if order != [n for n in range(len(constructs)) if n not in in_css]:
        log.warning("css not inlined: the template's Jinja does not survive HTML parsing")
        return protected
    # html5ever writes every doctype as `<!DOCTYPE html>`; email HTML often relies on
    # its XHTML 1.0 Transitional one (standards mode in Outlook and old webmails).
    doctype = _DOCTYPE.search(protected)
    if doctype is not None:
        inlined = _DOCTYPE.sub(lambda _: doctype[0], inlined, count=1)
    # The parser decoded `&#123;` into `{`: keep such braces text in the template.
    return _JINJA_START.sub("{{ '{' }}", inlined)
