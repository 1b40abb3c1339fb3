"""One household, one chain: open alerts, monitored households, idempotent re-adds."""

from __future__ import annotations

import uuid
from datetime import date

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.exc import IntegrityError

from serving.store import AlertStore, NewAlert, SkipReason, list_alerts
from serving.store.models import Alert
from tests.serving.store_fixtures import VILLAGE, alert

pytest_plugins = ["tests.serving.store_fixtures"]


def _reasons(store: AlertStore, alert_id: int) -> list[tuple[int, str]]:
    return [(r.rank, r.text_zh) for r in store.get(alert_id).reasons]


def test_new_alert_is_stored_with_its_reasons_and_routing(alert_store: AlertStore) -> None:
    report = alert_store.add_alerts([alert("hh-a", risk_types=("illness", "housing"))])
    (alert_id,) = report.created
    record = alert_store.get(alert_id)
    assert report.skipped == ()
    assert (record.county_code, record.township_code) == ("620102", "620102003")
    assert record.departments == ("medical_insurance", "civil_affairs", "housing")
    assert record.status == "new"
    assert _reasons(alert_store, alert_id) == [
        (1, "近12个月自付医疗费用高"),
        (2, "人均纯收入下降"),
    ]


def test_household_with_an_open_alert_gets_no_second_one(alert_store: AlertStore) -> None:
    (first,) = alert_store.add_alerts([alert("hh-a", as_of=date(2026, 2, 28))]).created
    report = alert_store.add_alerts([alert("hh-a"), alert("hh-b")])
    assert len(report.created) == 1
    (skipped,) = report.skipped
    assert (skipped.household_key, skipped.reason, skipped.existing_alert_id) == (
        "hh-a",
        SkipReason.OPEN_ALERT,
        first,
    )


def test_closed_chain_lets_a_new_alert_in(alert_store: AlertStore) -> None:
    (first,) = alert_store.add_alerts([alert("hh-a", as_of=date(2026, 2, 28))]).created
    alert_store.dispatch([first], actor="a")
    alert_store.record_verdict(
        first, "dismissed", visited_on=date(2026, 3, 10), caseworker="GS1", actor="a"
    )
    alert_store.close(first, actor="a")
    report = alert_store.add_alerts([alert("hh-a")])
    assert len(report.created) == 1 and report.skipped == ()
    assert alert_store.open_household_keys() == frozenset({"hh-a"})


def test_monitored_household_is_skipped(alert_store: AlertStore) -> None:
    report = alert_store.add_alerts([alert("hh-a"), alert("hh-b")], monitored={"hh-b"})
    assert [s.reason for s in report.skipped] == [SkipReason.MONITORED]
    assert list(list_alerts(alert_store)["household_key"]) == ["hh-a"]


def test_same_household_as_of_and_model_twice_creates_nothing(alert_store: AlertStore) -> None:
    batch = [alert("hh-a"), alert("hh-b", tier="orange", risk=0.4)]
    first = alert_store.add_alerts(batch)
    again = alert_store.add_alerts(batch)
    assert again.created == ()
    assert [(s.reason, s.existing_alert_id) for s in again.skipped] == [
        (SkipReason.ALREADY_STORED, first.created[0]),
        (SkipReason.ALREADY_STORED, first.created[1]),
    ]
    assert len(list_alerts(alert_store)) == 2
    assert again.skipped_counts() == {"already_stored": 2}


def test_household_named_twice_in_one_batch_is_stored_once(alert_store: AlertStore) -> None:
    report = alert_store.add_alerts([alert("hh-a"), alert("hh-a", version="m2")])
    assert len(report.created) == 1
    assert report.skipped_frame()["reason"].tolist() == ["repeated_in_batch"]


def test_database_itself_refuses_a_second_open_alert(alert_store: AlertStore) -> None:
    """The partial unique index holds even for writers that bypass add_alerts."""
    (alert_id,) = alert_store.add_alerts([alert("hh-a")]).created
    template = alert_store.get(alert_id)
    with pytest.raises(IntegrityError), alert_store.transaction() as session:
        session.add(
            Alert(
                household_key="hh-a",
                county_code=template.county_code,
                township_code=template.township_code,
                village_code=template.village_code,
                as_of=date(2026, 4, 30),
                model_version="m1",
                risk=0.5,
                tier="red",
                risk_types=[],
                departments=[],
                rule_triggers=[],
                source="model",
                status="new",
                created_at=template.created_at,
                updated_at=template.created_at,
            )
        )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"household_key": "11010519491231002X"}, "resident ID number"),
        ({"village_code": "62010200300"}, "12 digits"),
        ({"tier": "purple"}, "tier"),
        ({"risk": 1.5}, "probability"),
        ({"risk_types": ("bad_luck",)}, "unknown risk types"),
    ],
)
def test_invalid_alerts_are_refused_before_anything_is_written(
    alert_store: AlertStore, change: dict[str, object], message: str
) -> None:
    good = alert("hh-ok")
    bad = NewAlert(**{**good.__dict__, **change})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=message):
        alert_store.add_alerts([good, bad])
    assert list_alerts(alert_store).empty


def test_an_id_number_never_appears_in_the_error(alert_store: AlertStore) -> None:
    raw = "11010519491231002X"
    with pytest.raises(ValueError) as info:
        alert_store.add_alerts([NewAlert(raw, VILLAGE, date(2026, 3, 31), "m1", "red", 0.9)])
    assert raw not in str(info.value)


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.tuples(st.sampled_from(["h1", "h2", "h3", "h4"]), st.sampled_from(["m1", "m2"])),
        max_size=12,
    ),
    st.sets(st.sampled_from(["h1", "h2", "h3", "h4"])),
    st.sets(st.sampled_from(["h1", "h2", "h3", "h4"])),
)
def test_at_most_one_open_alert_per_household(
    alert_store: AlertStore,
    batch: list[tuple[str, str]],
    monitored: set[str],
    already_open: set[str],
) -> None:
    """Whatever is added, in whatever order, a household never has two open alerts."""
    # Each example gets its own households (the store is shared across examples).
    prefix = uuid.uuid4().hex[:8] + "-"
    alert_store.add_alerts([alert(prefix + k, version="m0") for k in sorted(already_open)])
    report = alert_store.add_alerts(
        [alert(prefix + key, version=version) for key, version in batch],
        monitored={prefix + k for k in monitored},
    )
    frame = list_alerts(alert_store)
    mine = frame[frame["household_key"].str.startswith(prefix)]
    assert mine.loc[mine["status"] != "closed", "household_key"].is_unique
    created = set(mine.loc[mine["model_version"] != "m0", "household_key"])
    blocked = {prefix + k for k in monitored | already_open}
    assert created == {prefix + k for k, _ in batch} - blocked
    assert len(report.created) + len(report.skipped) == len(batch)
