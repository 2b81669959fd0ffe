"""Reading a message submitted over SMTP (`sends.submission`) as a single send.

From, Subject, the text/plain and text/html bodies, and the `X-Envoi-*` headers (tags,
tracking switches, idempotency key). It is sent as it is written: its text is not a
template (escaped for the sandbox), other headers are not carried, attachments are
refused (a single send carries text only). Every refusal is an SMTP reply (`Refused`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage, Message, MIMEPart
from email.parser import BytesParser
from typing import Annotated, Final

from pydantic import Field, TypeAdapter, ValidationError

from envoi.sends import services
from envoi.sends.schemas import MAX_TAGS, Tag
from envoi.sends.streams import Tracking

TAGS_HEADER: Final = "X-Envoi-Tags"
TRACK_OPENS_HEADER: Final = "X-Envoi-Track-Opens"
TRACK_CLICKS_HEADER: Final = "X-Envoi-Track-Clicks"
IDEMPOTENCY_HEADER: Final = "X-Envoi-Idempotency-Key"

_OFF = frozenset({"false", "0", "no", "off"})
_ON = frozenset({"true", "1", "yes", "on"})
_TAGS: TypeAdapter[list[str]] = TypeAdapter(Annotated[list[Tag], Field(max_length=MAX_TAGS)])
# The openings of Jinja's markup: `{{`, `{%`, `{#`. Their first brace is written as
# an expression that prints it, so the sandbox renders the text unchanged.
_JINJA_OPENING = re.compile(r"\{(?=[{%#])")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


class Refused(Exception):
    """A message (or a session step) answered with `reply`: nothing was written."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


@dataclass(frozen=True)
class Submission:
    """What a submitted message asks: a single send's inline content and options."""

    from_address: str
    subject: str | None
    text_html: str | None
    text_plain: str | None
    tags: tuple[str, ...]
    tracking: Tracking
    idempotency_key: str | None

    def spec(self, recipient: str) -> services.SendSpec:
        """The send of this message to one recipient."""
        return services.SendSpec(
            email=recipient,
            from_address=self.from_address,
            subject=self.subject,
            text_html=self.text_html,
            text_plain=self.text_plain,
            tags=self.tags,
            tracking=self.tracking,
            idempotency_key=_recipient_key(self.idempotency_key, recipient),
        )


def read_message(raw: bytes, envelope_sender: str | None = None) -> Submission:
    """The submission `raw` asks for; Refused (5xx) when it cannot be sent as one."""
    message = BytesParser(policy=policy.default).parsebytes(raw)
    if not isinstance(message, EmailMessage):  # policy.default makes EmailMessages
        raise Refused("554 5.6.0 The message could not be parsed")
    html = _body(message, "html")
    plain = _body(message, "plain")
    if html is None and plain is None:
        raise Refused("554 5.6.0 The message has no text/plain or text/html body")
    extra = [part for part in _leaves(message) if part is not html and part is not plain]
    if extra:
        raise Refused(
            f"554 5.6.1 Attachments are not supported ({_describe(extra[0])}): "
            "send text/plain and/or text/html only"
        )
    subject = message.get("Subject")
    return Submission(
        from_address=_sender(message, envelope_sender),
        subject=_literal(str(subject)) if subject is not None else None,
        text_html=_literal(_text(html)) if html is not None else None,
        text_plain=_literal(_text(plain)) if plain is not None else None,
        tags=_tags(message.get_all(TAGS_HEADER) or []),
        tracking=Tracking(
            opens=_switch(message, TRACK_OPENS_HEADER), clicks=_switch(message, TRACK_CLICKS_HEADER)
        ),
        idempotency_key=_idempotency_key(message),
    )


def _body(message: EmailMessage, kind: str) -> MIMEPart | None:
    part = message.get_body(preferencelist=(kind,))
    return part if part is not None and part.get_content_subtype() == kind else None


def _leaves(message: Message) -> list[Message]:
    return [part for part in message.walk() if not part.is_multipart()]


def _describe(part: Message) -> str:
    name = part.get_filename()
    return f"{part.get_content_type()} {name!r}" if name else part.get_content_type()


def _text(part: MIMEPart) -> str:
    try:
        text: str = part.get_content()
    except (LookupError, ValueError) as exc:  # an unknown charset, a broken encoding
        raise Refused(f"554 5.6.0 A text part cannot be decoded: {one_line(str(exc))}") from None
    return text


def _literal(text: str) -> str:
    """`text` as a template that renders to itself: a submitted message is final."""
    return _JINJA_OPENING.sub("{{ '{' }}", text)


def _sender(message: EmailMessage, envelope_sender: str | None) -> str:
    """The From: address (with its display name), else the envelope's."""
    header = message.get("From")
    if header is None:
        if envelope_sender:
            return envelope_sender
        raise Refused("554 5.6.0 The message has no From: header")
    addresses: tuple[Address, ...] = getattr(header, "addresses", ())
    if len(addresses) != 1 or not addresses[0].addr_spec:
        raise Refused("554 5.6.0 The From: header must name exactly one address")
    return str(addresses[0])


def _tags(headers: Sequence[object]) -> tuple[str, ...]:
    tags = [tag.strip() for header in headers for tag in str(header).split(",") if tag.strip()]
    try:
        checked = _TAGS.validate_python(tags)
    except ValidationError:
        raise Refused(
            f"554 5.6.0 {TAGS_HEADER}: at most {MAX_TAGS} comma-separated tags of 1 to 64 "
            "characters"
        ) from None
    return tuple(sorted(set(checked)))


def _switch(message: EmailMessage, name: str) -> bool:
    value = message.get(name)
    if value is None:
        return True
    word = str(value).strip().lower()
    if word in _OFF:
        return False
    if word in _ON:
        return True
    raise Refused(f"554 5.6.0 {name}: say true or false")


def _idempotency_key(message: EmailMessage) -> str | None:
    value = message.get(IDEMPOTENCY_HEADER)
    if value is None:
        return None
    key = str(value).strip()
    if not key or len(key) > 200:
        raise Refused(f"554 5.6.0 {IDEMPOTENCY_HEADER}: 1 to 200 characters")
    return key


def _recipient_key(key: str | None, recipient: str) -> str | None:
    """The key of one recipient's send: the message's key names every send it made, so
    a retried message sends nothing more, to any of its recipients."""
    if key is None:
        return None
    return "smtp:" + hashlib.sha256(f"{key}\n{recipient}".encode()).hexdigest()


def one_line(text: str) -> str:
    return _CONTROL.sub(" ", text)[:300]
