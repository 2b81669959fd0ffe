"""The rules of an A/B test (post type B), pure: the sample, its split, the winner.

An A/B campaign names its variants in order: variant 0 is `message_id`, then
`ab_message_ids` as listed. Its test sends `ab_percent` percent of the audience,
dealt evenly among the variants; when the main phase comes, the variant with the
best win rate goes to the rest of the audience (docs/campaigns-ab.md).

- Sample size: `ab_percent` % of the accepted audience, rounded half up, but at least
  one recipient per variant when the audience has that many, and never more than
  the audience.
- Split: the sample dealt round-robin in random order, so the variants' sizes differ
  by one at most and the first variants get the extra ones.
- Win rate, on people's activity only (machine opens and bot clicks never count), each
  recipient once: O unique opens / delivered, C unique clicks / delivered, U unique
  clicks / unique opens; 0 when the denominator is 0.
- Winner: the highest rate; a tie (an all-empty sample included) goes to the variant
  with more delivered messages, then to the earliest variant.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Final

# When a campaign names no main_planned_at, its main phase comes this long after its
# test started.
DEFAULT_TEST_DURATION: Final = timedelta(hours=4)


class WinParameter(StrEnum):
    OPEN_RATE = "O"
    CLICK_RATE = "C"
    CLICK_TO_OPEN_RATE = "U"


class Phase(StrEnum):
    """`Campaign.ab_phase`: None until started; `test` while the sample is sent and
    until the winner is decided; `main` once the winner goes to the rest."""

    TEST = "test"
    MAIN = "main"


@dataclass(frozen=True)
class VariantFigures:
    """One variant's results in the test: its email, recipients sampled, messages
    delivered, recipients who opened and who clicked (people, each once)."""

    email_id: int
    sample: int
    delivered: int
    opened: int
    clicked: int

    def rate(self, parameter: str) -> float:
        return win_rate(parameter, self.delivered, self.opened, self.clicked)


def sample_size(accepted: int, percent: int, variants: int) -> int:
    """How many of `accepted` recipients the test mails."""
    if accepted <= 0 or variants <= 0:
        return 0
    wanted = (accepted * percent * 2 + 100) // 200  # percent of accepted, half up
    return min(accepted, max(wanted, variants))


def split(sample: int, variants: int) -> list[int]:
    """Each variant's share of the sample: even, the first ones taking the remainder."""
    if variants <= 0:
        return []
    share, extra = divmod(max(sample, 0), variants)
    return [share + (1 if index < extra else 0) for index in range(variants)]


def win_rate(parameter: str, delivered: int, opened: int, clicked: int) -> float:
    """The rate `parameter` (O, C or U) ranks variants by; 0.0 on an empty denominator."""
    kind = WinParameter(parameter)
    if kind is WinParameter.OPEN_RATE:
        numerator, denominator = opened, delivered
    elif kind is WinParameter.CLICK_RATE:
        numerator, denominator = clicked, delivered
    else:
        numerator, denominator = clicked, opened
    return numerator / denominator if denominator > 0 else 0.0


def winner(figures: Sequence[VariantFigures], parameter: str) -> int:
    """The index in `figures` (variant order) of the winning variant."""
    if not figures:
        raise ValueError("an A/B test has at least one variant")
    # max() keeps the first of equal keys: the earliest variant wins the last tie.
    return max(
        range(len(figures)),
        key=lambda index: (figures[index].rate(parameter), figures[index].delivered),
    )


def main_start(test_start: datetime, main_planned_at: datetime | None) -> datetime:
    """When the winner is decided and sent to the rest of the audience."""
    return main_planned_at or test_start + DEFAULT_TEST_DURATION
