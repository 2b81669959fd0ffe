"""Which crontab time an automated campaign runs now: a pure rule, no I/O.

Crontab times are UTC (envoi has no per-project time zone); croniter reads five
fields, or six with seconds last. A time `t` is due when:

- `t <= now`;
- `run_from <= t <= run_to`, either bound optional, both inclusive;
- `t >= started_at`: nothing from before the campaign started;
- `t` is after `last`, the campaign's latest occurrence: a run, a failed run, or the
  mark a resume leaves (so the times that fell while it was paused are skipped).

Only the latest such time is due. After an outage the missed times are not replayed
one by one: the latest of them runs once, late, and those before it are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from croniter import CroniterError, croniter

# Crontab times fall on whole seconds: croniter's previous time from 1 µs past `now`
# is `now` itself when `now` is one.
_EPSILON = timedelta(microseconds=1)


@dataclass(frozen=True)
class Schedule:
    """What decides an automated campaign's runs (aware UTC datetimes)."""

    crontab: str
    started_at: datetime | None
    run_from: datetime | None
    run_to: datetime | None
    last: datetime | None

    def due(self, now: datetime) -> datetime | None:
        """The crontab time to run now, or None."""
        upper = min(now, self.run_to) if self.run_to is not None else now
        try:
            latest: datetime = croniter(self.crontab, upper + _EPSILON).get_prev(datetime)
        except (CroniterError, ValueError):
            # Checked when written (campaigns.schemas): only an expression a later
            # croniter refuses gets here, and it is never due.
            return None
        floor = max((t for t in (self.started_at, self.run_from) if t is not None), default=None)
        if floor is not None and latest < floor:
            return None
        if self.last is not None and latest <= self.last:
            return None
        return latest

    def over(self, now: datetime) -> bool:
        """Past `run_to` with its last time handled: no run will ever be due again."""
        return self.run_to is not None and now > self.run_to and self.due(now) is None
