"""Calibration by band, estimated and realised performance, on hand-made frames."""

from __future__ import annotations

import math

import numpy as np
import pytest

from monitoring import performance


def test_calibration_bands_by_hand() -> None:
    # 200 households: risks 0.995, 0.99, ... (distinct), positives at ranks 1, 3 and 150
    risk = 1.0 - np.arange(1, 201) / 200.0
    label = np.zeros(200)
    label[[0, 2, 149]] = 1
    shuffled = np.random.default_rng(3).permutation(200)  # the order rows come in is irrelevant
    bands = performance.calibration_bands(risk[shuffled], label[shuffled]).set_index("band")
    assert bands["n"].to_dict() == {"top 1%": 2, "top 5%": 10, "top 10%": 20, "all": 200}
    assert bands.loc["top 1%", "predicted"] == pytest.approx((0.995 + 0.99) / 2)
    assert bands.loc["top 1%", "observed"] == pytest.approx(0.5)
    assert bands.loc["top 5%", "predicted"] == pytest.approx(risk[:10].mean())
    assert bands.loc["top 5%", "observed"] == pytest.approx(2 / 10)
    assert bands.loc["all", "observed"] == pytest.approx(3 / 200)
    assert bands.loc["top 5%", "ratio"] == pytest.approx(0.2 / risk[:10].mean())


def test_estimated_precision_and_recall_are_the_hand_sums() -> None:
    risk = np.array([0.1, 0.6, 0.3, 0.9, 0.05])
    got = performance.estimated_metrics(risk, k=2)
    assert got["precision_at_capacity"] == pytest.approx((0.9 + 0.6) / 2)
    assert got["recall_at_capacity"] == pytest.approx((0.9 + 0.6) / risk.sum())
    assert got["expected_positives"] == pytest.approx(1.95)


def test_expected_roc_auc_by_hand() -> None:
    # pairs (i above j): 0.8 over 0.2 weighs 0.8 * 0.8; all ordered pairs i != j weigh
    # 0.8 * 0.8 + 0.2 * 0.2
    assert performance.expected_roc_auc(np.array([0.2, 0.8])) == pytest.approx(0.64 / 0.68)
    # ties count half: two equal risks are a coin toss
    assert performance.expected_roc_auc(np.array([0.3, 0.3])) == pytest.approx(0.5)


def test_expected_roc_auc_matches_simulated_labels() -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    risk = rng.beta(1, 8, 4000)
    draws = [roc_auc_score(rng.random(4000) < risk, risk) for _ in range(200)]
    assert performance.expected_roc_auc(risk) == pytest.approx(np.mean(draws), abs=0.01)


def test_realised_metrics_by_hand() -> None:
    risk = np.array([0.1, 0.6, 0.3, 0.9, 0.05])
    label = np.array([1, 0, 1, 1, 0])
    got = performance.realised_metrics(risk, label, k=2)
    assert got["precision_at_capacity"] == pytest.approx(1 / 2)  # 0.9 hit, 0.6 miss
    assert got["recall_at_capacity"] == pytest.approx(1 / 3)
    # positives 0.9, 0.3, 0.1 vs negatives 0.6, 0.05: 4 of 6 pairs ordered right
    assert got["roc_auc"] == pytest.approx(4 / 6)
    assert math.isnan(performance.realised_metrics(risk, np.zeros(5), k=2)["roc_auc"])
