"""Rendering: an email compiled once per campaign and language, personalised per recipient.

`compile_message` does everything that does not depend on the recipient: it picks the
texts, inlines the CSS and marks the links to track in the HTML and in the variant's
own text (`links.py`), makes the text part when the variant has none (`text.py`), adds
the open pixel and the footer links, compiles the Jinja templates in the sandbox of
`emails.templates` and prepares the MIME skeleton (`mime.py`).
`CompiledMessage.render` then renders the templates with the recipient's variables
(the signed URLs among them, the marker characters taken out of the recipient's
values), numbers and signs the links the templates wrote, encodes each part in
quoted-printable and joins the bytes.

A single send may turn tracking off (`MessageContext.track_opens` / `track_clicks`,
seed 004's `openstracking` / `clicktracking`): its message is compiled without the
open pixel, or with its links left as written (none numbered, none signed).
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from functools import partial
from typing import Any, NamedTuple

from jinja2 import ChainableUndefined, Template, TemplateError
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment

from envoi.core.errors import Invalid
from envoi.core.tokens import MessageLinks
from envoi.delivery import links as marks
from envoi.delivery.mime import (
    CRLF,
    MimeSkeleton,
    address_header,
    ascii_address,
    current_date,
    one_line,
    quoted_printable,
    split_address,
    unstructured,
)
from envoi.delivery.text import html_to_text
from envoi.emails.models import Email, EmailContent
from envoi.emails.templates import make_environment
from envoi.emails.variants import field_name

OPEN_VARIABLE = "_envoi_open"
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)
_USES_UNSUBSCRIBE = re.compile(r"\bunsubscribe_url\b")
_USES_WEB_VIEW = re.compile(r"\bweb_view_url\b")
# Variables a template may use that cost an HMAC each: made only for templates using them.
_USES_FORWARD = re.compile(r"\bforward_url\b")
_USES_GOAL = re.compile(r"\bgoal_token\b")
# What the web view shows instead of the open pixel: a transparent 1x1 GIF that needs no
# request (a page viewed in the browser is a `mirror`, not an open).
BLANK_PIXEL = "data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7"
_FOOTER_STYLE = "font-size:12px;line-height:18px;color:#888888;text-align:center;padding:16px 0"
_FOOTER_LINK_STYLE = "color:#888888;text-decoration:underline"
WEB_VIEW_LABEL = "View this email in your browser"
UNSUBSCRIBE_LABEL = "Unsubscribe"
# The footer links' texts (web view, unsubscribe) by the language of the variant sent;
# any other language, and the default variant (language ""), get English's.
FOOTER_LABELS: dict[str, tuple[str, str]] = {
    "en": (WEB_VIEW_LABEL, UNSUBSCRIBE_LABEL),
    "fr": ("Voir cet e-mail dans votre navigateur", "Se désinscrire"),
    "de": ("Diese E-Mail im Browser ansehen", "Abmelden"),
    "es": ("Ver este correo en el navegador", "Darse de baja"),
    "it": ("Visualizza questa email nel browser", "Annulla l'iscrizione"),
    "pt": ("Ver este e-mail no navegador", "Cancelar inscrição"),
    "nl": ("Deze e-mail in je browser bekijken", "Afmelden"),
    "pl": ("Wyświetl tę wiadomość w przeglądarce", "Wypisz się"),
    "ru": ("Открыть письмо в браузере", "Отписаться"),
    "tr": ("Bu e-postayı tarayıcınızda görüntüleyin", "Abonelikten çık"),  # noqa: RUF001
    "zh": ("在浏览器中查看此邮件", "退订"),
    "ko": ("브라우저에서 이 이메일 보기", "수신 거부"),
}


def footer_labels(language: str) -> tuple[str, str]:
    """(web-view link text, unsubscribe link text) in `language` ("pt", "pt-BR" ...),
    English when envoi has no texts in it."""
    primary = language.replace("_", "-").partition("-")[0].lower()
    return FOOTER_LABELS.get(primary, FOOTER_LABELS["en"])


class RenderError(Exception):
    """A recipient's message could not be rendered (the template failed on their data)."""


class _Blank(ChainableUndefined):
    """Missing variables, and attributes of them, render as empty text; what the
    sandbox refused (an unsafe attribute) still raises SecurityError when used."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        if self._undefined_exception is SecurityError:
            self._fail_with_undefined_error()
        return super().__getattr__(name)


def environment(kind: str) -> SandboxedEnvironment:
    """The sandbox of `emails.templates` for `kind`, with envoi's lenient undefined."""
    env = make_environment(kind)
    env.undefined = _Blank
    return env


@dataclass(frozen=True)
class MessageContext:
    """What a compiled message needs besides the Email row."""

    project_id: int
    campaign_id: int | None
    post: str | None
    message_type: str
    tags: tuple[str, ...]
    bounce_domain: str
    # A single send's tracking switches (`sends`): off, no open pixel / no tracked
    # links are compiled in. Campaigns always track.
    track_opens: bool = True
    track_clicks: bool = True


@dataclass(frozen=True)
class Recipient:
    send_id: int
    email: str
    # uid, email, phone, language and declared fields (empty when there is no profile).
    profile: dict[str, Any] = field(default_factory=dict)
    # CSV columns, additional file and hook parameters: they win over profile fields.
    params: dict[str, Any] = field(default_factory=dict)


def choose_content(email: Email, language: str | None) -> EmailContent:
    """The variant in `language`, else the default variant (language ""), else the first
    one. Variants without any body (only a subject) are passed over."""
    with_body = [c for c in email.contents if c.text_html or c.text_plain or c.x_amp_html]
    by_language = {content.language: content for content in with_body}
    chosen = by_language.get(language or "") or by_language.get("")
    if chosen is None and with_body:
        chosen = with_body[0]
    if chosen is None:
        raise Invalid(f"email {email.id} has no text to send", loc=("body", "text_html"))
    return chosen


class _Templates(NamedTuple):
    subject: Template
    html: Template | None
    text: Template
    amp: Template | None


def _render(template: Template, variables: dict[str, Any]) -> str:
    """`template.render(variables)` without its copy of `variables` merged with the
    globals (`shared=True`: about 7 of a render's 11 microseconds); `variables` already
    hold the globals, and rendering only reads them.

    The context is made as `template.new_context(variables, shared=True)` makes it,
    but for the names of the globals it notes (used only to export a template's
    variables as a module, which an email never is): read from the template's
    ChainMap of globals, they cost as much as the rest of the context."""
    environment = template.environment
    context = environment.context_class(
        environment, variables, template.name, template.blocks, _NO_GLOBALS
    )
    return "".join(template.root_render_func(context))


_NO_GLOBALS: dict[str, Any] = {}


class CompiledMessage:
    """One email in one language, ready to be personalised for each recipient."""

    def __init__(
        self,
        email: Email,
        content: EmailContent,
        context: MessageContext,
        links: MessageLinks,
    ) -> None:
        self.language = content.language
        display, address = split_address(email.from_address)
        self.from_address = ascii_address(address)
        self.from_domain = self.from_address.rpartition("@")[2].lower()
        self._links = links
        self._unsubscribe_header = not email.not_add_unsubscr_link
        compiled = _compile_templates(email, content, context)
        self._templates = compiled.templates
        # The URLs of the literal links by index: the HTML's in document order, then
        # those only the variant's own text has. Written links are numbered after them,
        # per recipient; their click URLs carry their targets.
        self.link_urls: tuple[str, ...] = compiled.link_urls
        self._link_variables = tuple(
            marks.LINK_VARIABLE.format(index) for index in range(len(self.link_urls))
        )
        self._written_in_html = compiled.written_in_html
        self._written_in_text = compiled.written_in_text
        self._uses_forward = compiled.uses_forward
        self._uses_goal = compiled.uses_goal
        self._bounce_domain = context.bounce_domain
        self._track_opens = context.track_opens
        self._globals: dict[str, Any] = {}
        for template in self._templates:
            if template is not None:
                self._globals.update(template.globals)
        kinds = ["text/plain"]
        if self._templates.html is not None:
            if self._templates.amp is not None:
                kinds.append("text/x-amp-html")
            kinds.append("text/html")
        self._skeleton = MimeSkeleton(kinds)
        self._from_header = address_header("From", f"{display} <{address}>")
        self._post_and_feedback, self._tags_header = _static_headers(email, context)

    def render(self, recipient: Recipient) -> bytes:
        """The whole RFC 5322 message for `recipient`, CRLF line ends. Raises RenderError
        when the templates fail on this recipient's data.

        No Return-Path header: the envelope's MAIL FROM carries the VERP address
        (`MessageLinks.return_path`), and the final MTA writes Return-Path from it."""
        send_id = recipient.send_id
        links = self._links
        unsubscribe_url = links.unsubscribe(send_id)
        variables = self._variables(recipient, unsubscribe_url, links.mirror(send_id))
        clicks = links.clicks(send_id, len(self.link_urls))
        variables.update(zip(self._link_variables, clicks, strict=True))
        if self._track_opens:  # no pixel otherwise: its signed URL is not needed
            variables[OPEN_VARIABLE] = links.open(send_id)
        templates = self._templates
        written = marks.DynamicLinks(len(self.link_urls), partial(links.click, send_id))
        try:
            subject = _render(templates.subject, variables)
            html_body = amp_body = None
            # The HTML first: its written links are numbered in its order, and the
            # text part's links to the same targets take the same indexes.
            if templates.html is not None:
                html_text = _render(templates.html, variables)
                if self._written_in_html:
                    html_text = written.fill(html_text, html_part=True)
                html_body = quoted_printable(html_text)
                if templates.amp is not None:
                    amp_body = quoted_printable(_render(templates.amp, variables))
            text = _render(templates.text, variables)
            if self._written_in_text:
                text = written.fill(text, html_part=False)
            bodies = [quoted_printable(text)]
        except Exception as exc:  # a template can raise whatever its expressions raise
            raise RenderError(f"send {send_id}: {type(exc).__name__}: {exc}") from exc
        bodies += [body for body in (amp_body, html_body) if body is not None]
        headers = self._headers(recipient, subject, unsubscribe_url)
        return self._skeleton.assemble(headers, bodies)

    def web_view(self, recipient: Recipient) -> str:
        """The personalised HTML of the message as the web view (`/t/m/`) shows it: the
        HTML part rendered as `render` renders it, with the same tracked links, but no
        open pixel (`BLANK_PIXEL` in its place). A message without HTML shows its text
        part in a `<pre>`. Raises RenderError when the templates fail on this
        recipient's data."""
        send_id = recipient.send_id
        links = self._links
        variables = self._variables(recipient, links.unsubscribe(send_id), links.mirror(send_id))
        clicks = links.clicks(send_id, len(self.link_urls))
        variables.update(zip(self._link_variables, clicks, strict=True))
        variables[OPEN_VARIABLE] = BLANK_PIXEL
        templates = self._templates
        # Numbered as in `render`: the HTML's written links first.
        written = marks.DynamicLinks(len(self.link_urls), partial(links.click, send_id))
        try:
            if templates.html is not None:
                page = _render(templates.html, variables)
                return written.fill(page, html_part=True) if self._written_in_html else page
            subject = _render(templates.subject, variables)
            text = _render(templates.text, variables)
            if self._written_in_text:
                text = written.fill(text, html_part=False)
        except Exception as exc:  # a template can raise whatever its expressions raise
            raise RenderError(f"send {send_id}: {type(exc).__name__}: {exc}") from exc
        return (
            '<!DOCTYPE html><html><head><meta charset="utf-8">'
            f"<title>{html.escape(subject)}</title></head>"
            f'<body><pre style="white-space:pre-wrap">{html.escape(text)}</pre></body></html>'
        )

    def _variables(
        self, recipient: Recipient, unsubscribe_url: str, web_view_url: str
    ) -> dict[str, Any]:
        # The markers' characters are taken out of every value first: a recipient's
        # data can then never make a tracked link (links.py).
        profile: dict[str, Any] = marks.without_markers(recipient.profile)
        params: dict[str, Any] = marks.without_markers(recipient.params)
        variables = {
            **self._globals,
            **profile,
            **params,
            "profile": profile,
            "params": params,
            "email": marks.without_markers(recipient.email),
            "unsubscribe_url": unsubscribe_url,
            "web_view_url": web_view_url,
        }
        if self._uses_forward:
            variables["forward_url"] = self._links.forward(recipient.send_id)
        if self._uses_goal:
            variables["goal_token"] = self._links.goal_token(recipient.send_id)
        return variables

    def _headers(self, recipient: Recipient, subject: str, unsubscribe_url: str) -> str:
        send_id = recipient.send_id
        token = self._links.send_header(send_id)
        pieces = [
            self._from_header,
            f"To: {ascii_address(one_line(recipient.email))}{CRLF}",
            unstructured("Subject", subject),
            f"Date: {current_date()}{CRLF}",
            f"Message-ID: <{token}@{self.from_domain}>{CRLF}",
            self._skeleton.headers,
        ]
        if self._unsubscribe_header:
            # The mailto address carries the same signed token as the https URL
            # (MessageLinks.unsubscribe_mailto): reused rather than signed again.
            mailto = f"unsubscribe+{unsubscribe_url.rpartition('/')[2]}@{self._bounce_domain}"
            pieces.append(f"List-Unsubscribe: <{unsubscribe_url}>,{CRLF} <mailto:{mailto}>{CRLF}")
        # The blank line that ends the header block opens the skeleton's body.
        pieces += [self._post_and_feedback, f"X-Envoi-Send: {token}{CRLF}", self._tags_header]
        return "".join(pieces)


def _static_headers(email: Email, context: MessageContext) -> tuple[str, str]:
    """(List-Unsubscribe-Post and Feedback-ID, X-Envoi-Tags): the same in every message."""
    campaign = context.campaign_id if context.campaign_id is not None else 0
    feedback = one_line(f"{campaign}:{context.message_type}:{context.project_id}:envoi")
    post_and_feedback = f"Feedback-ID: {feedback}{CRLF}"
    if not email.not_add_unsubscr_link:
        post_and_feedback = f"List-Unsubscribe-Post: List-Unsubscribe=One-Click{CRLF}" + (
            post_and_feedback
        )
    tags = ", ".join(filter(None, (one_line(tag) for tag in context.tags)))
    return post_and_feedback, unstructured("X-Envoi-Tags", tags) if tags else ""


def compile_message(
    email: Email, content: EmailContent, context: MessageContext, links: MessageLinks
) -> CompiledMessage:
    """Compile `content` (a variant of `email`) for sending; raises Invalid when a
    template does not compile."""
    return CompiledMessage(email, content, context, links)


class _Compiled(NamedTuple):
    templates: _Templates
    link_urls: tuple[str, ...]
    written_in_html: bool  # the HTML has links its template writes
    written_in_text: bool
    uses_forward: bool  # some template says `forward_url`
    uses_goal: bool  # some template says `goal_token`


def _compile_templates(email: Email, content: EmailContent, context: MessageContext) -> _Compiled:
    language = content.language
    track = context.track_clicks
    subject = content.subject
    if subject is None:
        default = next((c for c in email.contents if c.language == ""), None)
        subject = default.subject if default is not None else None
    urls: list[str] = []
    html_source: str | None = None
    text_source = content.text_plain
    if content.text_html:
        html_source, text_from_html, urls = _prepare_html(content.text_html, track=track)
        if text_source is None:
            text_source = text_from_html
        html_source = _with_footer_html(email, html_source, language, pixel=context.track_opens)
    if content.text_plain is not None and track:
        text_source, urls = marks.track_text_links(content.text_plain, urls)
    text_source = _with_footer_text(email, text_source or "", language)
    amp = content.x_amp_html if html_source is not None else None
    templates = _Templates(
        subject=_compile("subject", language, subject or ""),
        html=_compile("text_html", language, html_source) if html_source is not None else None,
        text=_compile("text_plain", language, text_source),
        amp=_compile("x_amp_html", language, amp) if amp else None,
    )
    sources = "\n".join(filter(None, (subject, html_source, text_source, amp)))
    return _Compiled(
        templates,
        tuple(urls),
        written_in_html=html_source is not None and marks.DYNAMIC_OPEN in html_source,
        written_in_text=marks.DYNAMIC_OPEN in text_source,
        uses_forward=_USES_FORWARD.search(sources) is not None,
        uses_goal=_USES_GOAL.search(sources) is not None,
    )


def _compile(kind: str, language: str, source: str) -> Template:
    try:
        return environment(kind).from_string(source)
    except TemplateError as exc:
        name = field_name(kind, language)
        raise Invalid(f"{name} does not compile: {exc}", loc=("body", name)) from None


def _prepare_html(source: str, *, track: bool = True) -> tuple[str, str, list[str]]:
    """(HTML template with CSS inlined and tracked links as variables, the text
    template made from it, the URLs of its literal links by index). Without `track`
    (click tracking off) the links are left as written, and none is listed."""
    protected, constructs = marks.protect(source)
    inlined = marks.inline_css(protected, constructs)
    if track:
        marked, found = marks.rewrite_links(inlined, constructs)
    else:
        marked, found = inlined, []
    urls = [link.url for link in found]
    text = html_to_text(marked, urls)
    html_template = marks.as_variables(marks.restore(marked, constructs))
    return html_template, marks.as_variables(marks.restore(text, constructs)), urls


def _with_footer_html(email: Email, source: str, language: str, *, pixel: bool = True) -> str:
    """The open pixel (unless open tracking is off) and, unless the email's flags say
    no or the template already has them, the web-view and unsubscribe links, before
    `</body>`, in the variant's language."""
    web_view, unsubscribe = footer_labels(language)
    footer_links = []
    if not email.not_add_web_view_link and not _USES_WEB_VIEW.search(source):
        footer_links.append(_footer_link("{{ web_view_url }}", web_view))
    if not email.not_add_unsubscr_link and not _USES_UNSUBSCRIBE.search(source):
        footer_links.append(_footer_link("{{ unsubscribe_url }}", unsubscribe))
    footer = ""
    if footer_links:
        footer = f'<div style="{_FOOTER_STYLE}">{" &middot; ".join(footer_links)}</div>'
    image = f'<img src="{{{{ {OPEN_VARIABLE} }}}}" width="1" height="1" alt="">' if pixel else ""
    ends = list(_BODY_END.finditer(source))
    if not ends:
        return source + footer + image
    at = ends[-1].start()
    return source[:at] + footer + image + source[at:]


def _footer_link(url: str, label: str) -> str:
    return f'<a href="{url}" style="{_FOOTER_LINK_STYLE}">{html.escape(label, quote=False)}</a>'


def _with_footer_text(email: Email, source: str, language: str) -> str:
    web_view, unsubscribe = footer_labels(language)
    lines = []
    if not email.not_add_web_view_link and not _USES_WEB_VIEW.search(source):
        lines.append(f"{web_view}: {{{{ web_view_url }}}}")
    if not email.not_add_unsubscr_link and not _USES_UNSUBSCRIBE.search(source):
        lines.append(f"{unsubscribe}: {{{{ unsubscribe_url }}}}")
    if not lines:
        return source
    return source.rstrip("\n") + "\n\n-- \n" + "\n".join(lines) + "\n"
