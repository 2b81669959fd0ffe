"""The pure rules of an A/B test (`core.abtests`): sample, split, win rates, winner."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from envoi.core.abtests import VariantFigures, main_start, sample_size, split, win_rate, winner


@pytest.mark.parametrize(
    ("accepted", "percent", "variants", "size"),
    [
        (1000, 10, 2, 100),
        (7, 50, 3, 4),  # 3.5 rounds half up
        (7, 10, 3, 3),  # 0.7 → 1, but one per variant
        (2, 10, 3, 2),  # fewer than the variants: everyone, as far as it goes
        (10, 100, 2, 10),
        (0, 50, 2, 0),
        (999, 1, 2, 10),
    ],
)
def test_the_sample_is_the_percentage_with_one_per_variant_at_least(
    accepted: int, percent: int, variants: int, size: int
) -> None:
    assert sample_size(accepted, percent, variants) == size


def test_the_sample_is_split_evenly_the_first_variants_taking_the_remainder() -> None:
    assert split(10, 3) == [4, 3, 3]
    assert split(9, 3) == [3, 3, 3]
    assert split(2, 3) == [1, 1, 0]
    assert split(0, 2) == [0, 0]


def test_win_rates_and_their_empty_denominators() -> None:
    assert win_rate("O", delivered=10, opened=4, clicked=1) == 0.4
    assert win_rate("C", delivered=10, opened=4, clicked=1) == 0.1
    assert win_rate("U", delivered=10, opened=4, clicked=1) == 0.25
    assert win_rate("O", delivered=0, opened=0, clicked=0) == 0.0
    assert win_rate("U", delivered=5, opened=0, clicked=2) == 0.0
    with pytest.raises(ValueError, match="X"):
        win_rate("X", 1, 1, 1)


def _variant(email_id: int, delivered: int, opened: int, clicked: int) -> VariantFigures:
    return VariantFigures(email_id, delivered, delivered, opened, clicked)


def test_the_highest_rate_wins() -> None:
    figures = [_variant(1, 10, 4, 2), _variant(2, 10, 5, 1), _variant(3, 10, 1, 1)]
    assert winner(figures, "O") == 1
    assert winner(figures, "C") == 0  # 2 clicks of 10 beat 1 of 10
    assert winner(figures, "U") == 2  # 1 of 1 opener clicked


def test_a_tie_goes_to_more_delivered_then_to_the_earliest_variant() -> None:
    tied = [_variant(1, 10, 2, 0), _variant(2, 20, 4, 0), _variant(3, 20, 4, 0)]
    assert winner(tied, "O") == 1  # same rate: 20 delivered beat 10; then B before C
    empty = [_variant(1, 0, 0, 0), _variant(2, 0, 0, 0)]
    assert winner(empty, "C") == 0  # nothing to go on: variant A


def test_the_main_phase_defaults_to_four_hours_after_the_test() -> None:
    start = datetime(2030, 1, 1, 8, tzinfo=UTC)
    assert main_start(start, None) == start + timedelta(hours=4)
    planned = datetime(2030, 1, 2, tzinfo=UTC)
    assert main_start(start, planned) == planned
