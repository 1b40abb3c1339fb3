"""Point in time: rows reported after T never change T's features or scope.

Hypothesis adds new records, corrections of existing records (same key, new
values) and deletes the world's own late rows, all reported after T, and
checks that the features and the in-scope flag at T stay exactly the same.
The DuckDB reader and the in-memory versioning must also agree.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from doudi.contract import FEED_NAMES, Kind
from doudi.contract import feed as contract_feed
from doudi.months import Month
from doudi.settings import Settings
from doudi.warehouse import feed_dir, warehouse_name
from features.asof import load_history, read_feed_as_of
from features.build import county_features
from features.county import history_from_frames
from features.labels import county_labels
from tests.features.test_features_feeds import build_world

T = Month.parse("2024-06").end
COUNTY = "620102"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, pd.DataFrame]]:
    root = build_world(tmp_path_factory.mktemp("pit"))
    frames = {}
    for name in FEED_NAMES:
        folder = feed_dir(root, name) / f"county={COUNTY}"
        if folder.is_dir():
            files = sorted(folder.glob("*/*.parquet"))
            frames[name] = pa.concat_tables([pq.read_table(f) for f in files]).to_pandas(
                date_as_object=False)
    return root, frames


def _features_and_scope(frames: dict[str, pd.DataFrame]) -> tuple[pd.DataFrame, pd.DataFrame]:
    history = history_from_frames(COUNTY, frames)
    feats = county_features(history, T, Settings(workers=1))
    scope = county_labels(history, T, T, 6)[["household_key", "in_scope"]]
    return feats, scope


def _mutate(column: Any, value: Any, factor: float) -> Any:
    """Another valid value of the same column (for corrections)."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return value
    if column.kind == Kind.BOOL:
        return not value
    if column.kind in (Kind.MONEY, Kind.FLOAT):
        return round(float(value) * factor + 1.0, 2)
    if column.kind == Kind.INT and column.name != "year":
        return int(min(column.max_value or 10**6, int(value) + 1))
    if column.kind == Kind.ENUM and column.enum:
        codes = list(column.enum)
        return codes[(codes.index(value) + 1) % len(codes)] if value in codes else value
    return value


late_row = st.tuples(
    st.sampled_from(FEED_NAMES),  # feed
    st.integers(0, 50),  # which existing row to copy
    st.integers(1, 500),  # days after T it is reported
    st.integers(0, 900),  # days its event precedes the report
    st.floats(0.0, 5.0, allow_nan=False),  # value change
    st.booleans(),  # new record (new key) instead of a correction
)


@pytest.fixture(scope="module")
def expected(
    world: tuple[Path, dict[str, pd.DataFrame]],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    return _features_and_scope(world[1])


@settings(max_examples=12, print_blob=True, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(late_row, max_size=10), drop_own_late_rows=st.booleans())
def test_rows_reported_after_t_change_nothing_at_t(
    world: tuple[Path, dict[str, pd.DataFrame]], expected: tuple[pd.DataFrame, pd.DataFrame],
    rows: list[tuple[Any, ...]], drop_own_late_rows: bool,
) -> None:
    _, base = world
    expected_feats, expected_scope = expected
    frames = {k: v.copy() for k, v in base.items()}
    if drop_own_late_rows:
        frames = {k: v[v["reported_date"] <= pd.Timestamp(T)] for k, v in frames.items()}
    for feed_name, pick, report_days, event_days, factor, new_key in rows:
        source = base.get(feed_name)
        if source is None or source.empty:
            continue
        spec = contract_feed(feed_name)
        row = source.iloc[pick % len(source)].to_dict()
        reported = T + timedelta(days=report_days)
        row["reported_date"] = pd.Timestamp(reported)
        row["reported_month"] = f"{reported:%Y-%m}"
        row["source_row"] = 10_000 + pick
        for column in spec.columns:
            name = warehouse_name(column.name)
            if name in ("reported_date",) or name in [warehouse_name(k) for k in spec.key]:
                continue
            row[name] = _mutate(column, row[name], factor)
        if spec.event_column:
            event = reported - timedelta(days=event_days)
            kind = spec.column(spec.event_column).kind
            if kind == Kind.MONTH:
                event = date(event.year, event.month, 1)
            row[spec.event_column] = event.year if kind == Kind.INT else pd.Timestamp(event)
        if new_key:
            first_key = warehouse_name(spec.key[0])
            row[first_key] = f"{row[first_key]}-new{pick}"
        frames[feed_name] = pd.concat([frames[feed_name], pd.DataFrame([row])],
                                      ignore_index=True)
    feats, scope = _features_and_scope(frames)
    pd.testing.assert_frame_equal(feats, expected_feats)
    pd.testing.assert_frame_equal(scope, expected_scope)


def test_duckdb_reader_agrees_with_in_memory_versions(
    world: tuple[Path, dict[str, pd.DataFrame]],
) -> None:
    root, _ = world
    for name in FEED_NAMES:
        history = load_history(root, name, COUNTY, date(2030, 12, 31))
        for as_of in ("2023-06", "2024-06", "2024-07"):
            t = Month.parse(as_of).end
            duck = read_feed_as_of(root, name, t, county=COUNTY)
            memory = history.as_of(t)
            pd.testing.assert_frame_equal(duck, memory, check_dtype=False, obj=f"{name}@{t}")


def test_corrections_and_late_rows_in_the_reader(
    world: tuple[Path, dict[str, pd.DataFrame]],
) -> None:
    root, _ = world
    medical = read_feed_as_of(root, "medical", Month.parse("2024-06"), county=COUNTY)
    april = medical[(medical["person_key"] == "p1") & (medical["month"] == "2024-04-01")]
    assert april["out_of_pocket_yuan"].tolist() == [250.0]  # the correction
    assert "p4" not in set(medical["person_key"])  # reported 2024-07-05
    earlier = read_feed_as_of(root, "medical", Month.parse("2024-05"), county=COUNTY)
    april = earlier[(earlier["person_key"] == "p1") & (earlier["month"] == "2024-04-01")]
    assert april["out_of_pocket_yuan"].tolist() == [200.0]  # the version known then
    persons = read_feed_as_of(root, "persons", Month.parse("2024-06"), county=COUNTY)
    persons = persons.set_index("person_key")
    assert persons.loc["p5", "status"] == "deceased"
    assert read_feed_as_of(root, "persons", Month.parse("2024-02"), county=COUNTY).set_index(
        "person_key").loc["p5", "status"] == "living"
