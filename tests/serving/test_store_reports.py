"""Reports over the store on hand-made cases: duplicate assistance, omissions, labels, export."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest
from sqlalchemy import select

from serving.store import (
    AlertStore,
    alerts_for_export,
    duplicate_assistance,
    omissions,
    verdict_labels,
)
from serving.store.models import ExportAudit
from tests.serving.store_fixtures import alert

pytest_plugins = ["tests.serving.store_fixtures"]

VISITED = date(2026, 4, 1)


def _verified(
    store: AlertStore, key: str, risk_types: tuple[str, ...], *, visited: date = VISITED
) -> int:
    """An alert dispatched and verified: confirmed with `risk_types`, dismissed if none."""
    (alert_id,) = store.add_alerts([alert(key)]).created
    store.dispatch([alert_id], actor="export")
    store.record_verdict(
        alert_id,
        "confirmed" if risk_types else "dismissed",
        risk_types=risk_types,
        visited_on=visited,
        caseworker="GS7",
        actor="feedback",
    )
    return alert_id


def test_household_already_helped_is_not_re_referred_and_reported(
    alert_store: AlertStore,
) -> None:
    a = _verified(alert_store, "hh-a", ("illness",))
    outcome = alert_store.refer(
        a, referred_on=date(2026, 4, 3), actor="office", current_assistance=["dibao"]
    )
    assert outcome.referred == ("medical_insurance",)
    assert outcome.already_assisting == ("civil_affairs",)
    record = alert_store.get(a)
    assert [r.department for r in record.referrals] == ["medical_insurance"]
    assert record.history[-1].note == "already assisted by 民政: not re-referred"

    report = duplicate_assistance(alert_store, {"hh-a": ["dibao"]})
    assert report[["alert_id", "department", "current_assistance", "kind"]].to_dict("records") == [
        {
            "alert_id": a,
            "department": "civil_affairs",
            "current_assistance": "dibao",
            "kind": "not_re_referred",
        }
    ]
    assert report["referral_status"].isna().all()


def test_help_granted_after_a_live_referral_is_a_possible_duplicate(
    alert_store: AlertStore,
) -> None:
    b = _verified(alert_store, "hh-b", ("housing",))
    assert alert_store.refer(b, referred_on=date(2026, 4, 3), actor="office").referred == (
        "housing",
        "civil_affairs",
    )
    # Civil affairs then pays temporary assistance on its own while the referral waits.
    report = duplicate_assistance(alert_store, {"hh-b": ["temporary"], "hh-x": ["tekun"]})
    assert report[["alert_id", "department", "referral_status", "kind"]].to_dict("records") == [
        {
            "alert_id": b,
            "department": "civil_affairs",
            "referral_status": "pending",
            "kind": "referred_while_assisted",
        }
    ]
    alert_store.close(b, actor="office")
    assert duplicate_assistance(alert_store, {"hh-b": ["temporary"]}).empty


def test_omissions_after_the_configured_days(alert_store: AlertStore) -> None:
    c = _verified(alert_store, "hh-c", ("disability", "unstable_employment"))
    _verified(alert_store, "hh-d", ("education",))  # helped: education department
    _verified(alert_store, "hh-e", ())  # dismissed: never an omission
    f = _verified(alert_store, "hh-f", ("drinking_water",))
    alert_store.refer(f, referred_on=date(2026, 4, 2), actor="office")
    help_now = {"hh-d": ["education"]}

    # 29 days after the visit: not yet.
    assert omissions(alert_store, help_now, today=date(2026, 4, 30), after_days=30).empty
    # Live referrals (f) count as help under way.
    due = omissions(alert_store, help_now, today=date(2026, 5, 1), after_days=30)
    assert due[["alert_id", "risk_type", "expected_departments", "days_since_visit"]].to_dict(
        "records"
    ) == [
        {
            "alert_id": c,
            "risk_type": "disability",
            "expected_departments": "disabled_persons_federation;civil_affairs",
            "days_since_visit": 30,
        },
        {
            "alert_id": c,
            "risk_type": "unstable_employment",
            "expected_departments": "human_resources;civil_affairs",
            "days_since_visit": 30,
        },
    ]
    # Both departments decline f's referral: f's hardship is now uncovered too.
    alert_store.update_referral(f, "agriculture", "declined")
    alert_store.update_referral(f, "civil_affairs", "declined")
    due = omissions(alert_store, help_now, today=date(2026, 5, 1), after_days=30)
    assert set(due["alert_id"]) == {c, f}
    # A granted referral covers it again.
    alert_store.update_referral(f, "agriculture", "granted", programme="drinking_water_support")
    due = omissions(alert_store, help_now, today=date(2026, 5, 1), after_days=30)
    assert set(due["alert_id"]) == {c}
    # Assistance from civil affairs covers every hardship type (it routes them all).
    assert omissions(alert_store, {**help_now, "hh-c": ["dibao"]}, today=date(2026, 5, 1)).empty


def test_omission_days_are_validated(alert_store: AlertStore) -> None:
    with pytest.raises(ValueError, match="after_days"):
        omissions(alert_store, {}, today=date(2026, 5, 1), after_days=-1)


def test_unknown_assistance_code_is_a_clear_error(alert_store: AlertStore) -> None:
    with pytest.raises(KeyError, match="unknown assistance code 'pension'"):
        duplicate_assistance(alert_store, {"hh-a": ["pension"]})


def test_verdict_labels_for_training(alert_store: AlertStore) -> None:
    a = _verified(alert_store, "hh-a", ("illness", "housing"), visited=date(2026, 4, 2))
    b = _verified(alert_store, "hh-b", ())
    alert_store.add_alerts([alert("hh-unvisited")])
    labels = verdict_labels(alert_store)
    expected = pd.DataFrame(
        {
            "household_key": ["hh-a", "hh-b"],
            "as_of": pd.to_datetime(["2026-03-31", "2026-03-31"]),
            "verdict": ["confirmed", "dismissed"],
            "risk_types": ["illness;housing", ""],
            "visited_on": pd.to_datetime(["2026-04-02", "2026-04-01"]),
            "model_version": ["m1", "m1"],
            "alert_id": [a, b],
        }
    )
    pd.testing.assert_frame_equal(labels, expected, check_dtype=False)
    assert str(labels["as_of"].dtype).startswith("datetime64")
    with alert_store.transaction() as session:  # a session works as the source too
        assert len(verdict_labels(session)) == 2


def test_export_rows_dispatch_and_audit(alert_store: AlertStore) -> None:
    created = alert_store.add_alerts(
        [
            alert("hh-low", risk=0.30, tier="yellow"),
            alert("hh-high", risk=0.90),
            alert("hh-other-township", village="620102004001"),
        ]
    ).created
    rows = alerts_for_export(alert_store, "620102003")
    assert rows["household_key"].tolist() == ["hh-high", "hh-low"]
    assert rows.loc[0, "reason_1"] == "近12个月自付医疗费用高"
    assert rows.loc[0, "reason_3"] is None
    assert rows.loc[0, "departments_zh"] == "医保、民政"

    with pytest.raises(ValueError, match="not 620102003"):
        alert_store.record_export(
            created, actor="op1", township_code="620102003", file_path="/x/a.xlsx"
        )
    assert alert_store.get(created[0]).status == "new"  # nothing half-done

    audit_id = alert_store.record_export(
        rows["alert_id"].tolist(),
        actor="op1",
        township_code="620102003",
        file_path="/exports/620102003.xlsx",
    )
    assert alerts_for_export(alert_store, "620102003").empty
    assert alert_store.get(created[0]).history[-1].note == "exported to 620102003.xlsx"
    with alert_store.transaction() as session:
        audit = session.scalar(select(ExportAudit).where(ExportAudit.id == audit_id))
        assert audit is not None
        assert (audit.actor, audit.household_count, audit.file_path) == (
            "op1",
            2,
            "/exports/620102003.xlsx",
        )


def test_referral_answers_are_checked(alert_store: AlertStore) -> None:
    a = _verified(alert_store, "hh-a", ("illness",))
    alert_store.refer(a, referred_on=date(2026, 4, 3), actor="office")
    with pytest.raises(ValueError, match="not run by 'medical_insurance'"):
        alert_store.update_referral(a, "medical_insurance", "granted", programme="dibao")
    with pytest.raises(ValueError, match="pending, granted or declined"):
        alert_store.update_referral(a, "medical_insurance", "maybe")
    with pytest.raises(KeyError, match="no referral to 'housing'"):
        alert_store.update_referral(a, "housing", "granted")
    alert_store.update_referral(a, "medical_insurance", "granted", programme="medical_assistance")
    (referral, _) = alert_store.get(a).referrals
    assert (referral.status, referral.programme) == ("granted", "medical_assistance")
