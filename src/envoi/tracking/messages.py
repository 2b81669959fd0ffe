"""The compiled messages the tracking endpoints need: a literal link's URL by its index
(`CompiledMessage.link_urls`) for a click, and the personalised HTML for a web view.

Compiled once per (email, language) the way the delivery worker compiles them
(`delivery.services.compile_for`, the language being the variant the send was
rendered in, stored on its spool row), and kept: every click of a campaign asks
for the same few. Used by the recorder thread only, so no lock.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable

from sqlalchemy.orm import Session

from envoi.core.errors import EnvoiError
from envoi.core.tokens import MessageLinks
from envoi.delivery.render import CompiledMessage, MessageContext
from envoi.delivery.services import compile_for

log = logging.getLogger("envoi.tracking")

CACHE_SIZE = 256  # (email, language) pairs kept compiled
# An email that is gone or does not compile is tried again after this long.
FAILURE_TTL_SECONDS = 60.0
# Message type of the context: the compiled message's headers are never built here.
_MESSAGE_TYPE = "L"

Key = tuple[int, str | None]  # email id, variant language


class Messages:
    def __init__(
        self,
        links: MessageLinks,
        bounce_domain: str,
        size: int = CACHE_SIZE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._links = links
        self._bounce_domain = bounce_domain
        self._size = size
        self._clock = clock
        self._compiled: OrderedDict[Key, CompiledMessage] = OrderedDict()
        self._failed: dict[Key, float] = {}  # key -> when to try again

    def get(
        self, session: Session, project_id: int, email_id: int, language: str | None
    ) -> CompiledMessage | None:
        """The email compiled in `language`'s variant; None when the project has no such
        email any more or it does not compile."""
        key = (email_id, language)
        compiled = self._compiled.get(key)
        if compiled is not None:
            self._compiled.move_to_end(key)
            return compiled
        if self._failed.get(key, 0.0) > self._clock():
            return None
        context = MessageContext(project_id, None, None, _MESSAGE_TYPE, (), self._bounce_domain)
        try:
            compiled = compile_for(session, email_id, language, context, self._links)
        except EnvoiError as exc:
            log.warning(
                "message cannot be compiled", extra={"email_id": email_id, "error": str(exc)}
            )
            self._failed[key] = self._clock() + FAILURE_TTL_SECONDS
            return None
        self._failed.pop(key, None)
        self._compiled[key] = compiled
        while len(self._compiled) > self._size:
            self._compiled.popitem(last=False)
        return compiled

    def link_url(
        self, session: Session, project_id: int, email_id: int, language: str | None, link: int
    ) -> str | None:
        """The URL of literal link `link` of the email, None when it has none such."""
        compiled = self.get(session, project_id, email_id, language)
        if compiled is None or not 0 <= link < len(compiled.link_urls):
            return None
        return compiled.link_urls[link]
