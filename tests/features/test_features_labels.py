"""Scope and labels at T = 2024-06-30 with horizon 6 months: (T, 2024-12-31]."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from doudi.errors import UserError
from doudi.months import Month
from doudi.settings import Settings
from features import (
    LABEL_COLUMNS,
    build_labels,
    feature_names,
    group_column_names,
    mature_months,
    training_table,
)
from tests.features.warehouse_fixture import Warehouse

M = Month.parse
SETTINGS = Settings(workers=1, horizon_months=6, label_allowance_months=3)


def _household(w: Warehouse, key: str, *, alive: bool = True) -> None:
    w.add("households", household_key=key, head_person_key=f"{key}p",
          reported_date="2023-01-05")
    w.add("persons", person_key=f"{key}p", household_key=key, reported_date="2023-01-05")
    if not alive:
        w.add("persons", person_key=f"{key}p", household_key=key, status="deceased",
              status_date="2024-02-01", reported_date="2024-02-03")


def _event(w: Warehouse, key: str, day: str, event: str, reported: str,
           risk: str = "illness") -> None:
    w.add("monitoring_events", household_key=key, event_date=day, event=event,
          risk_types=risk, reported_date=reported)


def _tekun(w: Warehouse, key: str, start: str, end: str | None, reported: str) -> None:
    w.add("social_assistance", household_key=key, program="tekun", start_date=start,
          end_date=end, monthly_amount_yuan=500.0, reported_date=reported)


def build_label_world(root: Path, *, extra_late_rows: bool = False) -> Path:
    w = Warehouse(root)
    for i in range(1, 18):
        _household(w, f"a{i}", alive=i != 14)
    _event(w, "a2", "2024-03-01", "identified", "2024-03-05")  # still monitored at T
    _event(w, "a3", "2023-01-01", "identified", "2023-01-05")
    _event(w, "a3", "2024-02-01", "risk_eliminated", "2024-02-05")
    _event(w, "a3", "2024-09-10", "identified", "2024-09-15", "illness;education")
    _event(w, "a4", "2024-05-01", "identified", "2024-05-03")  # same date: eliminated after
    _event(w, "a4", "2024-05-01", "risk_eliminated", "2024-05-03")
    _tekun(w, "a5", "2023-01-01", None, "2023-01-05")
    _tekun(w, "a6", "2023-01-01", "2024-06-30", "2024-06-30")  # covers T exactly
    _tekun(w, "a7", "2023-01-01", "2024-06-29", "2024-06-29")
    _event(w, "a8", "2024-06-30", "identified", "2024-07-02")  # on T: not in (T, T+H]
    _event(w, "a9", "2024-12-31", "identified", "2025-01-05")  # on T+H: counts
    _event(w, "a10", "2025-01-01", "identified", "2025-01-03")  # after T+H
    _event(w, "a11", "2024-08-01", "identified", "2025-04-10")  # reported late
    _event(w, "a12", "2024-04-01", "identified", "2024-07-10")  # before T, known after T
    _tekun(w, "a13", "2024-08-01", None, "2024-08-05")  # starts after T
    _event(w, "a16", "2024-08-01", "identified", "2024-08-03", "housing")
    _event(w, "a16", "2024-09-01", "risk_eliminated", "2024-09-03", "housing")
    _event(w, "a16", "2024-11-01", "identified", "2024-11-03", "disaster")
    _event(w, "a17", "2024-09-01", "identified", "2024-09-05", "illness")
    _event(w, "a17", "2024-09-01", "identified", "2024-10-01", "accident")  # correction
    # something reported after every model month used below
    _event(w, "a1", "2024-08-01", "identified", "2026-01-10")
    if extra_late_rows:
        _event(w, "a7", "2024-07-01", "identified", "2025-07-01")
        _tekun(w, "a1", "2023-01-01", None, "2025-07-02")
        w.add("households", household_key="a40", head_person_key="a40p",
              reported_date="2025-07-01")
        w.add("persons", person_key="a40p", household_key="a40", reported_date="2025-07-01")
    return w.write()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_label_world(tmp_path_factory.mktemp("labels"))


@pytest.fixture(scope="module")
def labels(world: Path) -> pd.DataFrame:
    return build_labels(world, M("2024-06"), SETTINGS, known_by=M("2025-03")).set_index(
        "household_key")


def test_scope(labels: pd.DataFrame) -> None:
    assert "a14" not in labels.index  # no living member
    out = {k for k, v in labels["in_scope"].items() if not v}
    assert out == {"a2", "a5", "a6"}


def test_labels_and_horizon_boundaries(labels: pd.DataFrame) -> None:
    positive = set(labels.index[labels["label"] == 1])
    # a8 on T and a10 after T+H do not count; a11 is reported after known_by;
    # a12's identification is before T.
    assert positive == {"a3", "a9", "a16", "a17"}


def test_risk_types_union_and_corrections(labels: pd.DataFrame) -> None:
    def types(key: str) -> set[str]:
        row = labels.loc[key]
        return {c.removeprefix("label_") for c in LABEL_COLUMNS[1:] if row[c] == 1}

    assert types("a3") == {"illness", "education"}
    assert types("a16") == {"housing", "disaster"}
    assert types("a17") == {"accident"}  # the corrected version wins
    assert types("a1") == set()


def test_late_reported_event_counts_once_known(world: Path) -> None:
    later = build_labels(world, M("2024-06"), SETTINGS, known_by=M("2025-06")).set_index(
        "household_key")
    assert later.loc["a11", "label"] == 1


def test_monitored_household_released_then_reidentified(world: Path) -> None:
    before = build_labels(world, M("2023-06"), SETTINGS, known_by=M("2025-03")).set_index(
        "household_key")
    assert not before.loc["a3", "in_scope"]  # identified 2023-01, eliminated 2024-02
    after = build_labels(world, M("2024-10"), SETTINGS, known_by=M("2025-06")).set_index(
        "household_key")
    assert not after.loc["a3", "in_scope"]  # identified again 2024-09
    assert not after.loc["a12", "in_scope"]  # its identification is known by now
    assert not after.loc["a13", "in_scope"]  # tekun since 2024-08


def test_mature_months() -> None:
    months = mature_months(M("2025-06"), SETTINGS, M("2024-01"))
    assert [f"{m:%Y-%m}" for m in (months[0], months[-1])] == ["2024-01", "2024-09"]
    with pytest.raises(UserError, match="no mature as-of month"):
        mature_months(M("2024-06"), SETTINGS, M("2024-01"))


def test_training_table_uses_only_mature_months_and_in_scope_rows(world: Path) -> None:
    table = training_table(world, M("2025-03"), SETTINGS, from_month=M("2024-05"))
    assert sorted({f"{d:%Y-%m}" for d in table["as_of"]}) == ["2024-05", "2024-06"]
    at_t = table[table["as_of"] == "2024-06-30"].set_index("household_key")
    assert set(at_t.index) == {f"a{i}" for i in range(1, 18)} - {"a2", "a5", "a6", "a14"}
    assert at_t.loc["a11", "label"] == 0  # reported 2025-04-10, after the model month
    assert at_t.loc["a1", "label"] == 0  # reported 2026
    for column in [*feature_names(), *group_column_names(), *LABEL_COLUMNS]:
        assert column in table.columns
    later = training_table(world, M("2025-06"), SETTINGS, from_month=M("2024-06"))
    assert later.set_index(["household_key", "as_of"]).loc[("a11", "2024-06-30"), "label"] == 1


def test_training_table_ignores_rows_reported_after_the_model_month(tmp_path: Path) -> None:
    plain = training_table(build_label_world(tmp_path / "a"), M("2025-06"), SETTINGS,
                           M("2024-01"))
    noisy = training_table(build_label_world(tmp_path / "b", extra_late_rows=True),
                           M("2025-06"), SETTINGS, M("2024-01"))
    pd.testing.assert_frame_equal(plain, noisy)
