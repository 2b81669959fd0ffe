"""What fires an event-driven automated campaign, as stored on `Campaign.trigger`.

Two kinds, one JSON object each (docs/campaigns-automated.md):

    {"event": "login_user", "delay_minutes": 30,
     "condition": <segment condition>, "payload_condition": <payload condition>}
    {"field": "plan", "on": "set" | "change", "delay_minutes": 0, "condition": ...,
     "payload_condition": ...}

`event`: every `POST /api/v1/events` of that name fires once. `field`: a users
upsert (single or bulk) that gives the declared field a value it had not
(`on: set`), or any value other than the stored one, the first included (`on:
change`, the default); clearing a field, or writing the value it has, fires nothing.
The profile change's payload is `{"field": ..., "old": ..., "new": ...}`.

`Campaign.trigger_on` (`event:<name>` / `field:<name>`) is what the write path looks
campaigns up by, in one indexed query.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

EVENT: Final = "event"
FIELD: Final = "field"
ON_SET: Final = "set"
ON_CHANGE: Final = "change"


@dataclass(frozen=True)
class Trigger:
    kind: str  # EVENT or FIELD
    name: str  # the event's or the field's name
    on: str | None = None  # FIELD only: ON_SET or ON_CHANGE
    delay_minutes: int = 0
    condition: dict[str, Any] | None = None
    payload_condition: dict[str, Any] | None = None

    @classmethod
    def of(cls, stored: dict[str, Any]) -> Trigger:
        kind = EVENT if EVENT in stored else FIELD
        return cls(
            kind=kind,
            name=str(stored[kind]),
            on=stored.get("on") if kind == FIELD else None,
            delay_minutes=int(stored.get("delay_minutes") or 0),
            condition=stored.get("condition"),
            payload_condition=stored.get("payload_condition"),
        )

    @property
    def key(self) -> str:
        return trigger_key(self.kind, self.name)

    def fires_on(self, old: Any, new: Any) -> bool:
        """A field trigger: does a write from `old` to `new` fire it? (None: no value.)"""
        if new is None:
            return False
        if self.on == ON_SET:
            return old is None
        return bool(old != new)


def trigger_key(kind: str, name: str) -> str:
    return f"{kind}:{name}"
