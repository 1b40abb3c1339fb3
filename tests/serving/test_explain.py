"""Explanations: exact additivity, grouping, reason texts from the registry."""

from __future__ import annotations

import dataclasses
from functools import cache

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from doudi.errors import UserError
from doudi.model_artifact import Calibrator, FeatureSpec, ModelArtifact
from features.registry import BY_NAME, FEATURES
from serving.explain import Explainer, county_medians, reference_rows
from tests.serving.scoring_fixtures import feature_frame, train_artifact

N_FEATURES = len(FEATURES)


@cache
def model() -> ModelArtifact:
    return train_artifact(feature_frame(400), rounds=25)


@cache
def frame_matrix() -> np.ndarray:
    return model().encode(feature_frame(400))


values = st.one_of(st.floats(-1e6, 1e6, allow_nan=False), st.just(float("nan")),
                   st.sampled_from([0.0, 1.0, 4.0, 20_000.0]))


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 5).flatmap(
    lambda n: arrays(np.float64, (n, N_FEATURES), elements=values)))
def test_contributions_plus_bias_equal_the_raw_margin(X: np.ndarray) -> None:
    explainer = Explainer(model())
    contrib = explainer.contributions(X)
    assert contrib.shape == (len(X), N_FEATURES + 1)
    np.testing.assert_allclose(contrib.sum(axis=1), model().raw_margin(X), rtol=0, atol=1e-9)
    grouped = explainer.group_contributions(contrib)
    # Groups plus the bias still add up to the margin: nothing lost or counted twice.
    np.testing.assert_allclose(grouped.sum(axis=1) + contrib[:, -1], model().raw_margin(X),
                               rtol=0, atol=1e-9)


def test_each_group_is_the_sum_of_exactly_its_members() -> None:
    explainer = Explainer(model())
    contrib = explainer.contributions(frame_matrix()[:50])
    grouped = explainer.group_contributions(contrib)
    names = model().feature_names
    for g, group in enumerate(explainer.groups):
        members = [names.index(m) for m in explainer.members(group)]
        assert {BY_NAME[names[j]].group for j in members} == {group}
        np.testing.assert_allclose(grouped[:, g], contrib[:, members].sum(axis=1), atol=1e-12)
    assert set(explainer.members("medical_oop")) >= {"medical_oop_6m", "medical_oop_12m"}


def test_reasons_push_risk_up_strongest_first_and_are_capped() -> None:
    explainer = Explainer(model(), max_reasons=3)
    X = frame_matrix()[:80]
    contrib = explainer.contributions(X)
    grouped = explainer.group_contributions(contrib)
    margin = contrib.sum(axis=1)

    def sigmoid(z: float) -> float:
        return float(1 / (1 + np.exp(-z)))

    for i, reasons in enumerate(explainer.reasons_from(X, contrib)):
        assert len(reasons) <= 3
        assert [r.rank for r in reasons] == list(range(1, len(reasons) + 1))
        margins = [r.margin for r in reasons]
        assert all(m > 0 for m in margins) and margins == sorted(margins, reverse=True)
        # Identity calibration, hand-computed: the risk the risk-raising groups add
        # (sigmoid(margin) - sigmoid(margin - P)), shared in proportion to log-odds.
        raising = grouped[i][grouped[i] > 0].sum()
        lifted = 100 * (sigmoid(margin[i]) - sigmoid(margin[i] - raising))
        for r in reasons:
            g = explainer.groups.index(r.group_key)
            assert r.margin == pytest.approx(grouped[i, g], abs=1e-12)
            assert r.scale == "probability points" and "个百分点" in r.text_zh
            assert "对数几率" not in r.text_zh
            assert r.contribution == pytest.approx(lifted * r.margin / raising, rel=1e-9)


def test_probability_points_of_all_raising_groups_add_up_to_their_lift() -> None:
    """Sizes are additive: over the risk-raising groups they sum to the risk those groups
    add, never more than the risk itself, for every household (alerted or not)."""
    explainer = Explainer(model(), max_reasons=8)
    X = frame_matrix()[:200]
    contrib = explainer.contributions(X)
    per_logodds = explainer.points_per_logodds(contrib)
    grouped = explainer.group_contributions(contrib)
    raising = np.clip(grouped, 0, None)
    calibrate = model().calibrator.apply
    margin = contrib.sum(axis=1)
    risk = calibrate(margin)
    lifted = 100 * (risk - calibrate(margin - raising.sum(axis=1)))
    assert np.isfinite(per_logodds).all() and (per_logodds >= 0).all()
    np.testing.assert_allclose((raising * per_logodds[:, None]).sum(axis=1), lifted,
                               rtol=1e-9, atol=1e-9)
    assert (lifted <= 100 * risk + 1e-9).all()


def test_reason_text_comes_from_the_registry_template() -> None:
    frame = feature_frame(400)
    X = model().encode(frame)
    explainer = Explainer(model())
    reasons = explainer.explain(X)
    i = next(i for i, rs in enumerate(reasons) if rs and rs[0].group_key == "medical_oop")
    changed = dict(BY_NAME)
    for name in explainer.members("medical_oop"):
        changed[name] = dataclasses.replace(
            BY_NAME[name], template_zh="测试模板{value:,.0f}元" + name)
    text = Explainer(model(), registry=changed).explain(X[i : i + 1])[0][0].text_zh
    assert text.startswith("测试模板")
    top_member = text.split("元", 1)[1].split("〔")[0].split("，")[0].split("（")[0]
    value = frame.loc[i, top_member]
    assert text.startswith(f"测试模板{value:,.0f}元{top_member}")
    assert "个百分点" in text


def test_comparison_with_the_county_median() -> None:
    frame = feature_frame(400)
    medians = county_medians(frame, model().feature_names)
    counties = frame["county_code"].to_numpy()
    assert medians.loc["620102", "medical_oop_12m"] == pytest.approx(
        frame.loc[frame["county_code"] == "620102", "medical_oop_12m"].median())
    reference = reference_rows(medians, counties)
    assert reference.shape == (len(frame), N_FEATURES)
    reasons = Explainer(model()).explain(model().encode(frame), reference=reference)
    texts = [r.text_zh for rs in reasons for r in rs]
    assert any("本县中位数" in t for t in texts)


def test_flags_that_are_off_and_missing_values_read_plainly() -> None:
    explainer = Explainer(model())
    j = model().feature_names.index("former_poor")
    assert explainer._member_text(j, 0.0, None) == "脱贫户：否"
    assert explainer._member_text(j, 1.0, None) == "属于脱贫户"
    k = model().feature_names.index("income_per_capita")
    assert explainer._member_text(k, float("nan"), None) == BY_NAME["income_per_capita"].absent_zh
    assert explainer._member_text(k, 6500.0, 7000.0) == \
        "最近核查人均纯收入 6,500 元（本县中位数 7,000 元）"


def test_a_model_feature_without_registry_spec_fails_at_load() -> None:
    base = model()
    renamed = (*base.features[:-1], FeatureSpec("not_in_registry", "numeric"))
    artifact = ModelArtifact(base.booster, renamed, Calibrator("identity"))
    with pytest.raises(UserError, match="not_in_registry"):
        Explainer(artifact)
