"""The down-sampled, weighted training table (`features.sample_negatives`, issue 16).

Every positive stays with weight 1; a negative stays with probability r (a hash of the
household and the as-of month) and carries 1/r, so weighted sums over the sample estimate
those over the full table. The county tasks sample, so the engines never hold the full table.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from doudi.months import Month
from doudi.settings import Settings
from features import SAMPLE_WEIGHT, sample_negatives, training_table


def _table(n: int, positive_share: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "household_key": [f"hk_{i:07d}" for i in range(n)],
        "as_of": pd.to_datetime(np.where(rng.random(n) < 0.5, "2024-06-30", "2024-07-31")),
        "label": (rng.random(n) < positive_share).astype("int8"),
        "x": rng.normal(size=n),
    })


def test_positives_all_kept_negatives_weighted_by_the_inverse_rate() -> None:
    table = _table(4000, 0.05, seed=1)
    sample = sample_negatives(table, 0.25)
    positives = sample[sample["label"] == 1]
    negatives = sample[sample["label"] == 0]
    assert len(positives) == int(table["label"].sum())
    assert (positives[SAMPLE_WEIGHT] == 1.0).all()
    assert (negatives[SAMPLE_WEIGHT] == 4.0).all()
    assert 0.2 < len(negatives) / int((table["label"] == 0).sum()) < 0.3
    # the sample's rows are the table's rows, in the table's order, untouched
    merged = sample.drop(columns=SAMPLE_WEIGHT).merge(table, how="left", indicator=True)
    assert (merged["_merge"] == "both").all()
    assert sample["household_key"].is_monotonic_increasing


def test_the_same_rows_on_every_call_and_nested_across_rates() -> None:
    table = _table(3000, 0.03, seed=2)
    first = sample_negatives(table, 0.2)
    pd.testing.assert_frame_equal(first, sample_negatives(table.copy(), 0.2))
    # one uniform per row: a lower rate keeps a subset of a higher rate's rows
    wider = set(sample_negatives(table, 0.5)["household_key"])
    assert set(first["household_key"]) <= wider
    assert len(sample_negatives(table, 1.0)) == len(table)


def test_a_household_is_drawn_per_month() -> None:
    """The draw depends on (household, month): not the same households every month."""
    n = 2000
    keys = [f"hk_{i:05d}" for i in range(n)]
    table = pd.DataFrame({
        "household_key": keys * 2,
        "as_of": pd.to_datetime(["2024-06-30"] * n + ["2024-07-31"] * n),
        "label": np.zeros(2 * n, dtype="int8"),
    })
    sample = sample_negatives(table, 0.5)
    june = set(sample.loc[sample["as_of"].dt.month == 6, "household_key"])
    july = set(sample.loc[sample["as_of"].dt.month == 7, "household_key"])
    assert 0.15 < len(june & july) / n < 0.35  # about 0.5 * 0.5 when independent


@settings(max_examples=30, deadline=None)
@given(rate=st.floats(0.05, 0.95), seed=st.integers(0, 10_000))
def test_weighted_counts_estimate_the_full_table(rate: float, seed: int) -> None:
    table = _table(20_000, 0.03, seed=seed)
    sample = sample_negatives(table, rate)
    negatives = int((table["label"] == 0).sum())
    estimate = float(sample.loc[sample["label"] == 0, SAMPLE_WEIGHT].sum())
    # Binomial(n, r) kept; its estimate n_kept / r has sd sqrt(n (1 - r) / r)
    sd = np.sqrt(negatives * (1 - rate) / rate)
    assert abs(estimate - negatives) < 5 * sd
    assert float(sample[SAMPLE_WEIGHT].sum()) == pytest.approx(
        estimate + int(table["label"].sum()))


@pytest.mark.parametrize("rate", [0.0, -0.1, 1.5])
def test_a_rate_outside_zero_one_is_refused(rate: float) -> None:
    with pytest.raises(ValueError, match="not in"):
        sample_negatives(_table(10, 0.5, seed=0), rate)


@pytest.fixture(scope="module")
def workspace(small_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    import ingest

    settings = Settings(home=tmp_path_factory.mktemp("sample_home"), workers=2)
    ingest.ingest(small_world / "raw", settings)
    return settings


def test_the_engine_samples_inside_the_county_tasks_as_the_rule_says(
    workspace: Settings,
) -> None:
    """`training_negative_rate` samples per county task; the result is the rule applied to
    the full table (one row's fate depends on that row only)."""
    month = Month.parse("2025-06")
    full = training_table(workspace.warehouse_dir, month, workspace)
    assert SAMPLE_WEIGHT not in full  # rate 1: today's table, unchanged
    sampled_settings = workspace.model_copy(update={"training_negative_rate": 0.3})
    sampled = training_table(workspace.warehouse_dir, month, sampled_settings)
    expected = pd.concat(
        [sample_negatives(part, 0.3) for _, part in full.groupby("county_code", sort=True)],
        ignore_index=True)
    pd.testing.assert_frame_equal(sampled, expected, check_exact=True)
    assert int(sampled["label"].sum()) == int(full["label"].sum()) > 0
    assert len(sampled) < 0.5 * len(full)
    assert sampled["as_of"].min() >= pd.Timestamp(date(2023, 1, 31))
