"""The text/plain part of an email whose variant has none, made from its HTML.

A small converter on the standard library's `html.parser` rather than html2text:
html2text is GPL (envoi is not) and an extra dependency for a step that runs once per
campaign and language, on the template (Jinja tokens and link markers pass through as
text), not per recipient. It keeps what a reader of plain text needs: paragraphs and
line breaks, headings, list items, table rows, images' alt text, and links as
`text (url)`, where url is the same tracked-link marker as in the HTML.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from html.parser import HTMLParser

from envoi.delivery.links import DYNAMIC_OPEN, JINJA_OPEN, LINK_CLOSE, LINK_OPEN

_BLOCKS = frozenset(
    {
        "address", "article", "aside", "blockquote", "center", "dd", "div", "dl", "dt",
        "fieldset", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6",
        "header", "hr", "li", "main", "nav", "ol", "p", "pre", "section", "table",
        "tbody", "thead", "tfoot", "tr", "ul",
    }
)  # fmt: skip
_PARAGRAPHS = frozenset({"p", "h1", "h2", "h3", "h4", "h5", "h6", "table", "blockquote", "hr"})
_HIDDEN = frozenset({"head", "style", "script", "title", "template", "noscript"})
_CELLS = frozenset({"td", "th"})
_SPACES = re.compile(r"[ \t\r\n\f\v]+")
_BLANK_LINES = re.compile(r"\n{3,}")
_LINK = re.compile(f"{LINK_OPEN}(\\d+){LINK_CLOSE}")
# Hrefs written out after their text: tracked links and what the template writes.
_SHOWN = re.compile(f"https?://|[{DYNAMIC_OPEN}{JINJA_OPEN}]", re.IGNORECASE)
# `{{`, `{%` or `{#` in the text of the HTML (from `&#123;` ...) must stay text in the
# text template that this output becomes.
_JINJA_START = re.compile(r"\{(?=[{%#])")


def html_to_text(source: str, urls: Sequence[str]) -> str:
    """Plain text of `source`; `urls[i]` is the URL of tracked link i, so that a link
    whose text is its own URL is written once."""
    parser = _TextParser(urls)
    parser.feed(source)
    parser.close()
    return parser.text()


class _TextParser(HTMLParser):
    def __init__(self, urls: Sequence[str]) -> None:
        super().__init__(convert_charrefs=True)
        self._urls = urls
        self._out: list[str] = []
        self._hidden = 0
        self._pre = 0
        self._lists: list[int] = []  # per open list: 0 for <ul>, the next number for <ol>
        self._href: str | None = None
        self._anchor_start = 0
        self._cell_in_row = 0
        self._newlines = 2  # line ends at the end of the output: the start is a block start

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HIDDEN:
            self._hidden += 1
        elif self._hidden:
            return
        elif tag == "br":
            self._emit("\n")
        elif tag in _CELLS:
            if self._cell_in_row:
                self._emit(" ")
            self._cell_in_row += 1
        elif tag == "img":
            self._image(dict(attrs))
        elif tag == "a":
            self._href = dict(attrs).get("href")
            self._anchor_start = len(self._out)
        else:
            self._block_start(tag)

    def _block_start(self, tag: str) -> None:
        if tag in ("ul", "ol"):
            # A list stands apart like a paragraph; a list inside a list item does not.
            self._break(1 if self._lists else 2)
            self._lists.append(1 if tag == "ol" else 0)
        if tag == "pre":
            self._pre += 1
        if tag == "tr":
            self._cell_in_row = 0
        if tag in _BLOCKS:
            self._break(2 if tag in _PARAGRAPHS else 1)
        if tag == "li":
            self._emit(self._bullet())
        elif tag == "hr":
            self._emit("-" * 20)
            self._break(2)

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN:
            self._hidden = max(0, self._hidden - 1)
            return
        if self._hidden:
            return
        if tag == "a":
            self._end_anchor()
        elif tag in ("ul", "ol") and self._lists:
            self._lists.pop()
            self._break(1 if self._lists else 2)
        elif tag == "pre":
            self._pre = max(0, self._pre - 1)
        if tag in _BLOCKS:
            self._break(2 if tag in _PARAGRAPHS else 1)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)

    def handle_data(self, data: str) -> None:
        if self._hidden:
            return
        if not self._pre:
            data = _SPACES.sub(" ", data)
            if self._at_line_start():
                data = data.lstrip(" ")
        if data:
            self._emit(_JINJA_START.sub("{{ '{' }}", data))

    def _image(self, attrs: dict[str, str | None]) -> None:
        alt = (attrs.get("alt") or "").strip()
        if alt:
            self.handle_data(alt)

    def _end_anchor(self) -> None:
        href, self._href = self._href, None
        if not href:
            return
        label = "".join(self._out[self._anchor_start :]).strip()
        marker = _LINK.fullmatch(href)
        if marker is None and not _SHOWN.match(href):
            return  # mailto:, anchors ...: the text alone reads fine
        url = self._urls[int(marker[1])] if marker else None
        if label in ("", url, (url or "").split("://", 1)[-1]):
            del self._out[self._anchor_start :]
            self._emit(href)
        else:
            self._emit(f" ({href})")

    def _bullet(self) -> str:
        indent = "  " * max(0, len(self._lists) - 1)
        if not self._lists or self._lists[-1] == 0:
            return f"{indent}- "
        number = self._lists[-1]
        self._lists[-1] += 1
        return f"{indent}{number}. "

    def _at_line_start(self) -> bool:
        for piece in reversed(self._out):
            if piece:
                return piece.endswith(("\n", " "))
        return True

    def _emit(self, text: str) -> None:
        self._out.append(text)
        stripped = text.rstrip("\n")
        if stripped:
            self._newlines = len(text) - len(stripped)
        else:
            self._newlines += len(text)

    def _break(self, lines: int) -> None:
        """End the current line; `lines` 2 leaves a blank line after it. Breaks of
        nested blocks do not add up."""
        if self._newlines < lines:
            self._emit("\n" * (lines - self._newlines))

    def text(self) -> str:
        lines = (line.rstrip() for line in "".join(self._out).split("\n"))
        text = "\n".join(lines)
        return _BLANK_LINES.sub("\n\n", text).strip("\n") + "\n"
