"""Caseworkers' verdicts become labels (hand-made rows)."""

import pandas as pd

from training.job import apply_verdicts


def _table() -> pd.DataFrame:
    return pd.DataFrame({
        "household_key": ["h_a", "h_b", "h_c", "h_a"],
        "as_of": pd.to_datetime(["2024-01-31", "2024-01-31", "2024-01-31", "2024-02-29"]),
        "label": [0, 0, 1, 0],
        "label_illness": [0, 0, 1, 0],
        "label_housing": [0, 0, 0, 0],
    })


def test_confirmed_verdict_makes_that_row_positive_with_its_types() -> None:
    verdicts = pd.DataFrame({
        "household_key": ["h_a", "h_c", "h_z"],
        "as_of": pd.to_datetime(["2024-01-31", "2024-01-31", "2023-06-30"]),
        "verdict": ["confirmed", "dismissed", "confirmed"],
        "risk_types": ["housing;illness", "", "illness"],
    })
    out = apply_verdicts(_table(), verdicts)
    assert out["label"].tolist() == [1, 0, 1, 0]  # h_a Jan confirmed; h_c keeps its label
    assert out["label_housing"].tolist() == [1, 0, 0, 0]
    assert out["label_illness"].tolist() == [1, 0, 1, 0]
    # the input is not modified; unknown types and households are ignored
    assert _table()["label"].tolist() == [0, 0, 1, 0]


def test_no_verdicts_is_identity() -> None:
    table = _table()
    assert apply_verdicts(table, None) is table
    empty = pd.DataFrame(columns=["household_key", "as_of", "verdict", "risk_types"])
    assert apply_verdicts(table, empty) is table
