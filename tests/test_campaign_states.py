"""envoi.core.campaign_states: the life-cycle table, checked cell by cell (no database)."""

from __future__ import annotations

import pytest

from envoi.core.campaign_states import (
    TRANSITIONS,
    Action,
    State,
    TransitionError,
    allowed_actions,
    check_rewritable,
    next_state,
)

API_ACTIONS = (Action.START, Action.PAUSE, Action.RESUME, Action.ARCHIVE)
# (state, action) -> target for a campaign whose start time has passed.
EXPECTED = {
    (State.DRAFT, Action.START): State.RUNNING,
    (State.DRAFT, Action.ARCHIVE): State.ARCHIVED,
    (State.PLANNED, Action.DUE): State.RUNNING,
    (State.PLANNED, Action.PAUSE): State.PAUSED,
    (State.PLANNED, Action.ARCHIVE): State.ARCHIVED,
    (State.RUNNING, Action.PAUSE): State.PAUSED,
    (State.RUNNING, Action.FINISH): State.FINISHED,
    (State.PAUSED, Action.RESUME): State.RUNNING,
    (State.PAUSED, Action.ARCHIVE): State.ARCHIVED,
    (State.FINISHED, Action.ARCHIVE): State.ARCHIVED,
}


@pytest.mark.parametrize("state", list(State))
@pytest.mark.parametrize("action", list(Action))
def test_every_cell_of_the_table(state: State, action: Action) -> None:
    expected = EXPECTED.get((state, action))
    if expected is None:
        with pytest.raises(TransitionError) as raised:
            next_state("S_12", state, action, automated=False, start_ahead=False)
        assert str(raised.value).startswith(f"campaign S_12 is {state.value} and cannot ")
        assert raised.value.state is state
        assert raised.value.action is action
    else:
        assert next_state("S_12", state, action, automated=False, start_ahead=False) is expected


def test_a_start_time_ahead_means_planned() -> None:
    assert next_state("S_1", State.DRAFT, Action.START, automated=False, start_ahead=True) is (
        State.PLANNED
    )
    assert next_state("S_1", State.PAUSED, Action.RESUME, automated=False, start_ahead=True) is (
        State.PLANNED
    )


def test_automated_campaigns_never_wait_in_planned() -> None:
    for state, action in ((State.DRAFT, Action.START), (State.PAUSED, Action.RESUME)):
        assert next_state("A_1", state, action, automated=True, start_ahead=True) is State.RUNNING


def test_archived_is_final() -> None:
    assert allowed_actions(State.ARCHIVED) == []
    assert not any(source is State.ARCHIVED for source, _ in TRANSITIONS)


def test_messages_read_well() -> None:
    def message(state: State, action: Action) -> str:
        with pytest.raises(TransitionError) as raised:
            next_state("S_12", state, action, automated=False, start_ahead=False)
        return str(raised.value)

    assert message(State.ARCHIVED, Action.START) == (
        "campaign S_12 is archived and cannot start: archived is final"
    )
    assert message(State.RUNNING, Action.ARCHIVE) == (
        "campaign S_12 is running and cannot be archived: pause it first"
    )
    assert message(State.DRAFT, Action.PAUSE) == "campaign S_12 is draft and cannot be paused"


def test_only_drafts_are_rewritable() -> None:
    check_rewritable("S_1", State.DRAFT)
    for state in set(State) - {State.DRAFT}:
        with pytest.raises(TransitionError, match="only draft campaigns can be rewritten"):
            check_rewritable("S_1", state)


def test_the_api_actions_of_each_state() -> None:
    api = {state: {a for a in allowed_actions(state) if a in API_ACTIONS} for state in State}
    assert api == {
        State.DRAFT: {Action.START, Action.ARCHIVE},
        State.PLANNED: {Action.PAUSE, Action.ARCHIVE},
        State.RUNNING: {Action.PAUSE},
        State.PAUSED: {Action.RESUME, Action.ARCHIVE},
        State.FINISHED: {Action.ARCHIVE},
        State.ARCHIVED: set(),
    }
