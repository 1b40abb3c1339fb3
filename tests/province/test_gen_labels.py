"""Truth labels recomputed from the raw files, per the contract's prediction target."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from doudi.settings import Settings
from tests.province.extract_reader import (
    canonical_enum,
    canonical_risk_types,
)


def _month_end(as_of: pd.Timestamp, months: int = 0) -> str:
    return (as_of + pd.offsets.MonthEnd(months)).strftime("%Y-%m-%d")


def recompute(clean: dict[str, pd.DataFrame], as_of: pd.Timestamp, horizon: int) -> pd.DataFrame:
    """In scope / label / risk types for one as-of month end, written from the contract text."""
    t = as_of.strftime("%Y-%m-%d")
    t_h = _month_end(as_of, horizon)
    households = clean["households"]
    roster = set(households.loc[households["reported_date"] <= t, "household_id"])

    persons = clean["persons"].assign(
        status=lambda f: canonical_enum("persons", "status", f["status"])
    )
    known = persons[(persons["reported_date"] <= t) & (persons["status_date"] <= t)]
    latest = known.sort_values(["status_date", "reported_date"]).groupby("person_id").tail(1)
    with_members = set(latest.loc[latest["status"].isin(["living", "moved_in"]), "household_id"])

    events = clean["monitoring_events"].assign(
        event=lambda f: canonical_enum("monitoring_events", "event", f["event"])
    )
    seen = events[(events["reported_date"] <= t) & (events["event_date"] <= t)]
    seen = seen.assign(order=seen["event"].map({"identified": 0, "risk_eliminated": 1}))
    last = seen.sort_values(["event_date", "order"]).groupby("household_id").tail(1)
    monitored = set(last.loc[last["event"] == "identified", "household_id"])

    spells = clean["social_assistance"].assign(
        program=lambda f: canonical_enum("social_assistance", "program", f["program"])
    )
    tekun = spells[
        (spells["program"] == "tekun")
        & (spells["reported_date"] <= t)
        & (spells["start_date"] <= t)
    ]
    tekun = tekun.sort_values("reported_date").groupby(["household_id", "start_date"]).tail(1)
    covering = set(tekun.loc[(tekun["end_date"] == "") | (tekun["end_date"] >= t), "household_id"])

    identified = events[
        (events["event"] == "identified")
        & (events["event_date"] > t)
        & (events["event_date"] <= t_h)
    ]
    first = identified.sort_values("event_date").groupby("household_id").head(1)
    types = dict(zip(first["household_id"], canonical_risk_types(first["risk_types"]), strict=True))

    ids = sorted(households["household_id"].unique())
    return pd.DataFrame(
        {
            "household_id": ids,
            "in_scope": [
                h in roster and h in with_members and h not in monitored and h not in covering
                for h in ids
            ],
            "label": [h in types for h in ids],
            "label_risk_types": [types.get(h) for h in ids],
        }
    )


@pytest.fixture(scope="module")
def clean(small_extract) -> dict[str, pd.DataFrame]:  # type: ignore[no-untyped-def]
    return small_extract[2]


def test_labels_match_contract_definition(small_world: Path, clean) -> None:  # type: ignore[no-untyped-def]
    labels = pd.read_parquet(small_world / "truth" / "labels.parquet")
    horizon = Settings().horizon_months
    as_ofs = sorted(labels["as_of"].unique())
    assert len(as_ofs) == 30 - horizon  # every as-of month whose horizon fits the period
    for as_of in as_ofs:
        mine = recompute(clean, pd.Timestamp(as_of), horizon)
        truth = labels[labels["as_of"] == as_of].sort_values("household_id").reset_index(drop=True)
        assert truth["household_id"].tolist() == mine["household_id"].tolist()
        assert truth["in_scope"].tolist() == mine["in_scope"].tolist(), as_of
        assert truth["label"].tolist() == mine["label"].tolist(), as_of
        assert truth["label_risk_types"].tolist() == mine["label_risk_types"].tolist(), as_of


def test_identified_rows_have_risk_types_and_eliminations_repeat_them(clean) -> None:  # type: ignore[no-untyped-def]
    events = (
        clean["monitoring_events"]
        .assign(
            event=lambda f: canonical_enum("monitoring_events", "event", f["event"]),
            risk_types=lambda f: canonical_risk_types(f["risk_types"]),
            category=lambda f: canonical_enum("monitoring_events", "category", f["category"]),
            source=lambda f: canonical_enum("monitoring_events", "source", f["source"]),
        )
        .sort_values(["household_id", "event_date", "event"])
    )
    assert (events.loc[events["event"] == "identified", "risk_types"] != "").all()
    for _, rows in events.groupby("household_id"):
        previous = None
        for row in rows.itertuples():
            if row.event == "risk_eliminated":
                assert previous is not None
                assert (row.category, row.risk_types, row.source) == (
                    previous.category,
                    previous.risk_types,
                    previous.source,
                )
            previous = row if row.event == "identified" else None


def test_hardship_onset_is_often_undetected_and_labels_partly_false_alarms(
    small_world: Path,
) -> None:
    labels = pd.read_parquet(small_world / "truth" / "labels.parquet")
    scope = labels[labels["in_scope"]]
    began = scope["hardship_began_in_horizon"]
    assert 0 < (began & scope["label"]).sum() < began.sum()  # some hardship never identified
    assert (~began & scope["label"]).sum() > 0  # some identifications without a new onset
