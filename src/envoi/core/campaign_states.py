"""The campaign life cycle as a pure table: which action moves which state where.

    draft ──start──► running | planned          (planned while its start time is ahead)
    planned ──due──► running                    (the scheduler, when the start time comes)
    running | planned ──pause──► paused
    paused ──resume──► running | planned
    running ──finish──► finished                (delivery, when the audience is exhausted)
    draft | planned | paused | finished ──archive──► archived   (final)

Automated campaigns never wait in `planned`: their crontab says when each run happens,
so `start` and `resume` make them `running` (that is, active) at once.

`start`, `pause`, `resume` and `archive` are the API's actions; `due` and `finish` belong
to the scheduler and the delivery workers. Rewriting (PUT) is allowed in `draft` only:
once started, a campaign's audience is a snapshot that delivery works from, and a
rewrite would silently diverge from what was already sent.
"""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    DRAFT = "draft"
    PLANNED = "planned"
    RUNNING = "running"
    PAUSED = "paused"
    FINISHED = "finished"
    ARCHIVED = "archived"


class Action(StrEnum):
    START = "start"
    PAUSE = "pause"
    RESUME = "resume"
    ARCHIVE = "archive"
    DUE = "due"
    FINISH = "finish"


# The placeholder target of actions whose result depends on the start time.
_SCHEDULED = "scheduled"

TRANSITIONS: dict[tuple[State, Action], State | str] = {
    (State.DRAFT, Action.START): _SCHEDULED,
    (State.PLANNED, Action.DUE): State.RUNNING,
    (State.RUNNING, Action.PAUSE): State.PAUSED,
    (State.PLANNED, Action.PAUSE): State.PAUSED,
    (State.PAUSED, Action.RESUME): _SCHEDULED,
    (State.RUNNING, Action.FINISH): State.FINISHED,
    (State.DRAFT, Action.ARCHIVE): State.ARCHIVED,
    (State.PLANNED, Action.ARCHIVE): State.ARCHIVED,
    (State.PAUSED, Action.ARCHIVE): State.ARCHIVED,
    (State.FINISHED, Action.ARCHIVE): State.ARCHIVED,
}

REWRITABLE: frozenset[State] = frozenset({State.DRAFT})

# Campaigns done with their source: a campaign in any other state may still build (or,
# automated, rebuild at each run) its audience from it, so the segment or API source it
# reads must not be deleted under it.
DONE_WITH_SOURCE: frozenset[State] = frozenset({State.FINISHED, State.ARCHIVED})

# How the refusal reads: "campaign S_12 is archived and cannot start".
_VERBS: dict[Action | str, str] = {
    Action.START: "start",
    Action.PAUSE: "be paused",
    Action.RESUME: "resume",
    Action.ARCHIVE: "be archived",
    Action.DUE: "become due",
    Action.FINISH: "finish",
    "rewrite": "be rewritten",
}

# What to do instead, where there is something useful to say.
_HINTS: dict[tuple[State, Action | str], str] = {
    (State.RUNNING, Action.ARCHIVE): "pause it first",
    (State.RUNNING, Action.START): "it is already running",
    (State.PLANNED, Action.START): "it is already started",
    (State.PAUSED, Action.START): "resume it instead",
    (State.ARCHIVED, Action.START): "archived is final",
}


class TransitionError(ValueError):
    """The action is not allowed in the campaign's current state."""

    def __init__(self, post: str, state: State, action: Action | str) -> None:
        message = f"campaign {post} is {state.value} and cannot {_VERBS[action]}"
        hint = _HINTS.get((state, action))
        if hint is None and action == "rewrite":
            hint = "only draft campaigns can be rewritten"
        super().__init__(f"{message}: {hint}" if hint else message)
        self.state = state
        self.action = action


def next_state(
    post: str, state: State, action: Action, *, automated: bool, start_ahead: bool
) -> State:
    """The state `action` leads to, or TransitionError.

    `start_ahead` says whether the campaign's start time is still in the future; it
    decides between `planned` and `running` for `start` and `resume`.
    """
    target = TRANSITIONS.get((state, action))
    if target is None:
        raise TransitionError(post, state, action)
    if target == _SCHEDULED:
        return State.PLANNED if start_ahead and not automated else State.RUNNING
    return State(target)


def check_rewritable(post: str, state: State) -> None:
    if state not in REWRITABLE:
        raise TransitionError(post, state, "rewrite")


def allowed_actions(state: State) -> list[Action]:
    """The actions the table allows from `state`, in declaration order."""
    return [action for (source, action) in TRANSITIONS if source == state]
