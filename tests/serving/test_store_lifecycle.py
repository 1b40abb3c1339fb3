"""The alert lifecycle: legal steps, refused steps, and the history of every change."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from serving.store import AlertStore, IllegalTransitionError, Status
from serving.store.lifecycle import NEXT, check_transition
from tests.serving.store_fixtures import FrozenClock, alert

pytest_plugins = ["tests.serving.store_fixtures"]

VISIT = date(2026, 4, 20)


def _new(store: AlertStore, key: str = "hh-a") -> int:
    return store.add_alerts([alert(key)]).created[0]


def test_confirmed_chain_to_closure_records_every_step(
    alert_store: AlertStore, store_clock: FrozenClock
) -> None:
    alert_id = _new(alert_store)
    store_clock.advance(days=1)
    alert_store.dispatch([alert_id], actor="export:620102003")
    store_clock.advance(days=20)
    alert_store.record_verdict(
        alert_id,
        "confirmed",
        risk_types=["illness"],
        visited_on=VISIT,
        caseworker="GS0042",
        actor="feedback",
    )
    store_clock.advance(days=1)
    outcome = alert_store.refer(alert_id, referred_on=date(2026, 4, 22), actor="township-office")
    store_clock.advance(days=30)
    alert_store.close(alert_id, actor="township-office", note="medical assistance granted")

    record = alert_store.get(alert_id)
    assert record.status == "closed"
    assert outcome.referred == ("medical_insurance", "civil_affairs")
    steps = [(h.from_status, h.to_status, h.actor) for h in record.history]
    assert steps == [
        (None, "new", "doudi score"),
        ("new", "dispatched", "export:620102003"),
        ("dispatched", "verified_confirmed", "feedback"),
        ("verified_confirmed", "referred", "township-office"),
        ("referred", "closed", "township-office"),
    ]
    times = [h.at for h in record.history]
    assert times[0] == datetime(2026, 5, 1, 8, 0, tzinfo=UTC)
    assert times[-1] == datetime(2026, 6, 22, 8, 0, tzinfo=UTC)  # 1 + 20 + 1 + 30 days later
    assert record.history[-1].note == "medical assistance granted"
    assert record.updated_at == times[-1]
    assert record.verdict is not None and record.verdict.caseworker == "GS0042"


def test_dismissed_chain_closes_without_referral(alert_store: AlertStore) -> None:
    alert_id = _new(alert_store)
    alert_store.dispatch([alert_id], actor="export")
    alert_store.record_verdict(
        alert_id, "dismissed", visited_on=VISIT, caseworker="GS0042", actor="feedback"
    )
    with pytest.raises(IllegalTransitionError, match="'verified_dismissed' to 'referred'"):
        alert_store.refer(alert_id, referred_on=VISIT, actor="x")
    alert_store.close(alert_id, actor="township-office")
    assert [h.to_status for h in alert_store.get(alert_id).history] == [
        "new",
        "dispatched",
        "verified_dismissed",
        "closed",
    ]


@pytest.mark.parametrize(
    ("steps", "target", "message"),
    [
        ([], "closed", "cannot go from 'new' to 'closed'"),
        ([], "dispatched-twice", "cannot go from 'dispatched' to 'dispatched'"),
        (["dispatch", "dismiss", "close"], "closed", "it is final"),
    ],
)
def test_illegal_transitions_are_refused_and_leave_no_trace(
    alert_store: AlertStore, steps: list[str], target: str, message: str
) -> None:
    alert_id = _new(alert_store)
    for step in steps:
        if step == "dispatch":
            alert_store.dispatch([alert_id], actor="a")
        elif step == "dismiss":
            alert_store.record_verdict(
                alert_id, "dismissed", visited_on=VISIT, caseworker="GS1", actor="a"
            )
        elif step == "close":
            alert_store.close(alert_id, actor="a")
    before = alert_store.get(alert_id)
    with pytest.raises(IllegalTransitionError, match=message):
        if target == "dispatched-twice":
            alert_store.dispatch([alert_id], actor="a")
            alert_store.dispatch([alert_id], actor="a")
        else:
            alert_store.transition(alert_id, target, actor="a")
    after = alert_store.get(alert_id)
    expected_history = len(before.history) + (1 if target == "dispatched-twice" else 0)
    assert len(after.history) == expected_history


def test_verdict_on_an_undispatched_alert_is_refused(alert_store: AlertStore) -> None:
    alert_id = _new(alert_store)
    with pytest.raises(IllegalTransitionError, match="'new' to 'verified_confirmed'"):
        alert_store.record_verdict(
            alert_id,
            "confirmed",
            risk_types=["illness"],
            visited_on=VISIT,
            caseworker="GS1",
            actor="a",
        )
    assert alert_store.get(alert_id).verdict is None


def test_dispatch_is_all_or_nothing(alert_store: AlertStore) -> None:
    first, second = alert_store.add_alerts([alert("hh-a"), alert("hh-b")]).created
    alert_store.dispatch([second], actor="a")
    with pytest.raises(IllegalTransitionError):
        alert_store.dispatch([first, second], actor="a")
    assert alert_store.get(first).status == "new"


def test_verdict_and_referral_need_their_own_calls(alert_store: AlertStore) -> None:
    alert_id = _new(alert_store)
    alert_store.dispatch([alert_id], actor="a")
    with pytest.raises(ValueError, match="record_verdict"):
        alert_store.transition(alert_id, Status.VERIFIED_CONFIRMED, actor="a")
    with pytest.raises(ValueError, match="caseworker"):
        alert_store.record_verdict(
            alert_id,
            "dismissed",
            visited_on=VISIT,
            caseworker="11010519491231002X",  # a resident ID is not a staff code
            actor="a",
        )


@given(st.sampled_from(list(Status)), st.sampled_from(list(Status)))
def test_check_transition_accepts_exactly_the_lifecycle_table(
    current: Status, target: Status
) -> None:
    allowed = {
        ("new", "dispatched"),
        ("dispatched", "verified_confirmed"),
        ("dispatched", "verified_dismissed"),
        ("verified_confirmed", "referred"),
        ("verified_dismissed", "closed"),
        ("referred", "closed"),
    }
    assert (target in NEXT[current]) == ((current.value, target.value) in allowed)
    if (current.value, target.value) in allowed:
        assert check_transition(1, current, target) is target
    else:
        with pytest.raises(IllegalTransitionError, match=f"alert 1: cannot go from '{current}'"):
            check_transition(1, current, target)
