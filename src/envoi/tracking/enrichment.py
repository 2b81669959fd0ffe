"""Who made a hit: the user agent read as email client, device and OS
(`tracking.clients`), the client address placed in a country, region and city
(`tracking.geo`). These fields go into every tracking event's `data`.

Runs on the recorder thread, before its transaction: the look-ups are CPU work that
needs no database, so SQLite's writer lock is not held while they run.
"""

from __future__ import annotations

from typing import Any

from envoi.tracking.clients import describe
from envoi.tracking.geo import NOWHERE, Locator

USER_AGENT_MAX = 500  # characters of the user agent an event keeps
VISITOR_FIELDS = (
    "client",
    "device",
    "os",
    "country_code",
    "country_name",
    "region_name",
    "city_name",
    "ip",
    "user_agent",
)
# A hit without a visitor (an unsubscribe by mail: no browser, no address).
NO_VISITOR: dict[str, Any] = dict.fromkeys(VISITOR_FIELDS)


class Enricher:
    def __init__(self, locator: Locator) -> None:
        # The locators cache by address themselves (`tracking.geo`): recipients open
        # and click from the same addresses, proxies are a few hundred of them.
        self._locate = locator.locate

    def visitor(self, ip: str | None, user_agent: str) -> dict[str, Any]:
        """The `VISITOR_FIELDS` of one hit (a new dict: the caller adds to it)."""
        client = describe(user_agent)
        place = self._locate(ip) if ip else NOWHERE
        return {
            "client": client.client,
            "device": client.device,
            "os": client.os,
            "country_code": place.country_code,
            "country_name": place.country_name,
            "region_name": place.region_name,
            "city_name": place.city_name,
            "ip": ip,
            "user_agent": user_agent[:USER_AGENT_MAX],
        }
