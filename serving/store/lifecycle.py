"""The alert lifecycle: which status may follow which, and the error for the rest.

new -> dispatched -> verified_confirmed | verified_dismissed;
verified_confirmed -> referred -> closed; verified_dismissed -> closed.
"""

from __future__ import annotations

from enum import StrEnum
from types import MappingProxyType
from typing import Final

from doudi.errors import UserError


class Status(StrEnum):
    NEW = "new"
    DISPATCHED = "dispatched"  # sent to the township's caseworkers
    VERIFIED_CONFIRMED = "verified_confirmed"  # visited: hardship is real
    VERIFIED_DISMISSED = "verified_dismissed"  # visited: no hardship found
    REFERRED = "referred"  # handed to the departments that help
    CLOSED = "closed"


NEXT: Final = MappingProxyType(
    {
        Status.NEW: frozenset({Status.DISPATCHED}),
        Status.DISPATCHED: frozenset({Status.VERIFIED_CONFIRMED, Status.VERIFIED_DISMISSED}),
        Status.VERIFIED_CONFIRMED: frozenset({Status.REFERRED}),
        Status.VERIFIED_DISMISSED: frozenset({Status.CLOSED}),
        Status.REFERRED: frozenset({Status.CLOSED}),
        Status.CLOSED: frozenset(),
    }
)

OPEN_STATUSES: Final = frozenset(s for s in Status if s is not Status.CLOSED)


class IllegalTransitionError(UserError):
    """A status change the lifecycle does not allow."""


def check_transition(alert_id: int, current: str, target: str) -> Status:
    """The target status, if `current -> target` is legal; else IllegalTransitionError."""
    try:
        source, goal = Status(current), Status(target)
    except ValueError:
        raise IllegalTransitionError(
            f"alert {alert_id}: unknown status {target!r}; "
            f"statuses are {', '.join(s.value for s in Status)}"
        ) from None
    if goal not in NEXT[source]:
        allowed = ", ".join(sorted(s.value for s in NEXT[source])) or "nothing (it is final)"
        raise IllegalTransitionError(
            f"alert {alert_id}: cannot go from {source.value!r} to {goal.value!r}; "
            f"from {source.value!r} the next step is {allowed}"
        )
    return goal
