"""Scoring: tiers within capacity, types, departments, rules vs model, and `doudi score`."""

from __future__ import annotations

import math
from datetime import date
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from typer.testing import CliRunner

from doudi.model_artifact import Calibrator, ModelArtifact
from doudi.settings import Settings, TierSettings
from serving import routing
from serving.scoring import (
    TIER_NONE,
    assign_tiers,
    rule_only_capped,
    score,
    select_types,
    to_new_alerts,
)
from serving.store import list_alerts, open_store
from serving.store.models import ExportAudit
from tests.serving.export_world import D_GRADE_HOUSE, HOUSEHOLDS, write_world
from tests.serving.scoring_fixtures import AS_OF, feature_frame, train_artifact

SEVERITY = {"red": 3, "orange": 2, "yellow": 1, TIER_NONE: 0}


@cache
def typed_model() -> ModelArtifact:
    return train_artifact(feature_frame(400), rounds=25, with_types=True)


@cache
def plain_model() -> ModelArtifact:
    return train_artifact(feature_frame(400), rounds=25)


@settings(max_examples=80, deadline=None)
@given(
    risk=st.lists(st.floats(0, 1), min_size=1, max_size=300),
    capacity=st.floats(0.5, 20),
    red=st.floats(0.5, 5), orange=st.floats(0.5, 10), yellow=st.floats(0.5, 15),
    red_min=st.floats(0, 1), min_alert=st.floats(0, 0.2),
)
def test_tiers_respect_capacity_and_rank(risk: list[float], capacity: float, red: float,
                                         orange: float, yellow: float, red_min: float,
                                         min_alert: float) -> None:
    s = Settings(capacity_pct=capacity, tiers=TierSettings(
        red_top_pct=red, orange_top_pct=orange, yellow_top_pct=yellow, red_min_risk=red_min,
        min_alert_risk=min_alert))
    r = np.array(risk)
    rank, tier = assign_tiers(r, s)
    n = len(r)
    alerted = tier != TIER_NONE
    assert alerted.sum() <= math.ceil(n * min(capacity, yellow) / 100)
    assert sorted(rank.tolist()) == list(range(1, n + 1))
    assert not (alerted & (r < min_alert)).any()
    # A higher rank never has a milder tier.
    by_rank = np.array([SEVERITY[t] for t in tier])[np.argsort(rank)]
    assert (np.diff(by_rank) <= 0).all()
    assert (tier == "red").sum() <= max(math.ceil(n * red / 100), (alerted & (r >= red_min)).sum())
    assert set(np.argsort(-r, kind="stable")[: alerted.sum()]) == set(np.flatnonzero(alerted)) \
        or len(set(r)) < n  # ties may swap equal risks


def test_tiers_hand_computed() -> None:
    def tiers(red_min_risk: float) -> list[str]:
        s = Settings(capacity_pct=5, tiers=TierSettings(
            red_top_pct=1, orange_top_pct=3, yellow_top_pct=5, red_min_risk=red_min_risk,
            min_alert_risk=0.02))
        head = [0.95, 0.4, 0.39, 0.38, 0.37, 0.36, 0.35, 0.34, 0.015, 0.014]
        risk = np.array(head + [0.01] * 190)  # 200 households: red 2, orange 6, capacity 10
        rank, tier = assign_tiers(risk, s)
        assert rank[:10].tolist() == list(range(1, 11))
        return tier[:12].tolist()

    assert tiers(0.9) == ["red", "red", "orange", "orange", "orange", "orange", "yellow",
                          "yellow", "none", "none", "none", "none"]
    # Risk at or above red_min_risk is red whatever the rank (within capacity).
    assert tiers(0.3) == ["red"] * 8 + ["none"] * 4


def test_equal_risks_rank_by_margin_not_by_key() -> None:
    """A calibrator tied two pairs at one risk each; the model's margin still orders them."""
    s = Settings(capacity_pct=5, tiers=TierSettings(
        red_top_pct=1, orange_top_pct=3, yellow_top_pct=5, red_min_risk=0.99,
        min_alert_risk=0.0))
    n = 100  # red: rank 1, orange: ranks 2-3, yellow: ranks 4-5
    risk = np.full(n, 0.01)
    margin = np.linspace(-6, -5, n)
    keys = np.array([f"k{i:03d}" for i in range(n)])
    # a/b tie at the top risk, c/d at the next: in each pair the LATER key has the higher margin.
    risk[:4] = [0.3, 0.3, 0.2, 0.2]
    margin[:4] = [1.0, 2.0, 0.5, 0.7]
    keys[:4] = ["a", "b", "c", "d"]
    rank, tier = assign_tiers(risk, s, keys, margin=margin)
    assert rank[:4].tolist() == [2, 1, 4, 3]
    # The red and orange boundaries fall inside tied pairs: the margin decides, not the key.
    assert tier[:4].tolist() == ["orange", "red", "yellow", "orange"]
    # Exactly equal margins only are ordered by key.
    margin[1] = margin[0]
    rank, _ = assign_tiers(risk, s, keys, margin=margin)
    assert rank[:2].tolist() == [1, 2]


def test_score_ranks_by_margin_through_a_step_calibrator() -> None:
    """An old step-shaped (isotonic) artifact ties risks: ranks, tiers and capacity follow
    the margin, and no tie at a tier boundary is split by pseudonym."""
    frame = feature_frame(400, seed=3)
    margin = plain_model().raw_margin(frame)
    cuts = np.quantile(margin, [0.5, 0.8, 0.9, 0.99])
    step = Calibrator("isotonic", x=tuple(np.repeat(cuts, 2) + np.tile([0, 1e-9], 4)),
                      y=(0.01, 0.02, 0.02, 0.05, 0.05, 0.2, 0.2, 0.4))
    model = train_artifact(feature_frame(400), rounds=25, calibrator=step)
    # Reversed keys: a key tie-break would order every tied block backwards.
    frame["household_key"] = [f"h{999 - i:03d}" for i in range(len(frame))]
    out = score(frame, model, Settings(workers=1, rule_capacity_pct=0), AS_OF)
    assert out["risk"].nunique() <= 5 < out["margin"].nunique()  # the steps tie risks
    by_rank = out.sort_values("rank")
    assert (np.diff(by_rank["margin"].to_numpy()) <= 0).all()
    expected = np.lexsort((out["household_key"].to_numpy(), -out["margin"].to_numpy()))
    assert out["rank"].to_numpy()[expected].tolist() == list(range(1, len(out) + 1))
    # Tiers are the province's: among the alerted, tiers never differ between households
    # with equal margins and a milder tier never has a higher margin.
    alerted = by_rank[by_rank["alerted"].to_numpy()]
    severity = alerted["tier"].map(SEVERITY).to_numpy()
    assert (np.diff(severity) <= 0).all()
    boundary = np.flatnonzero(np.diff(severity) < 0)
    assert len(boundary) >= 2  # red/orange/yellow boundaries inside tied risk blocks
    m = alerted["margin"].to_numpy()
    assert (m[boundary] > m[boundary + 1]).all()  # each boundary separates unequal margins
    # Who is alerted is decided per township (its capacity): there, its best margins.
    for _, township in by_rank.groupby(by_rank["village_code"].str[:9]):
        flags = township["alerted"].to_numpy()
        cut = int(flags.sum())
        assert flags[:cut].all() and not flags[cut:].any()
        if 0 < cut < len(flags):
            assert township["margin"].iloc[cut - 1] > township["margin"].iloc[cut]


def test_rule_only_alerts_break_equal_rule_scores_by_margin() -> None:
    rule_score = np.array([1.0, 1.0, 1.0])
    margin = np.array([-3.0, -1.0, -2.0])  # risks could be tied; margins are not
    keys = np.array(["a", "b", "c"])
    kept = rule_only_capped(rule_score, margin, np.zeros(3, bool), keys,
                            Settings(rule_capacity_pct=34))  # 2 of 3
    assert kept.tolist() == [False, True, True]


def test_type_selection_threshold_and_fallback() -> None:
    picked = select_types({"illness": np.array([0.9, 0.2, 0.6]),
                           "housing": np.array([0.7, 0.3, 0.1]),
                           "not_a_type": np.array([1.0, 1.0, 1.0])})
    assert picked == [("illness", "housing"), ("housing",), ("illness",)]


def test_score_rows_columns_and_provenance() -> None:
    frame = feature_frame(400, seed=3)
    frame.loc[0, "housing_safety_level"] = 4.0
    s = Settings(workers=1)
    out = score(frame, typed_model(), s, AS_OF)
    assert len(out) == len(frame) and out["household_key"].tolist() == \
        frame["household_key"].tolist()
    assert (out["as_of"] == AS_OF).all()
    assert (out["model_version"] == "doudi-risk/7").all()
    np.testing.assert_allclose(out["risk"], typed_model().predict_proba(frame))
    model_alert = out["source"].isin(["model", "both"])
    rules_fired = out["rule_triggers"].map(len) > 0
    rule_only = out["alerted"] & ~model_alert
    assert (out["alerted"] <= (model_alert | rules_fired)).all()
    assert rule_only.sum() <= math.ceil(len(frame) * s.rule_capacity_pct / 100)
    # With room for every rule-only household, every fired rule alerts.
    roomy = score(frame, typed_model(), Settings(workers=1, rule_capacity_pct=100), AS_OF)
    assert (roomy["alerted"] == (model_alert | rules_fired)).all()
    assert (out.loc[rule_only, "source"] == "rules").all()
    assert (out.loc[rules_fired & model_alert, "source"] == "both").all()
    assert model_alert.sum() <= math.ceil(len(frame) * s.capacity_pct / 100)
    assert "R_HOUSE_D" in roomy.loc[0, "rule_triggers"]
    assert "housing" in roomy.loc[0, "risk_types"]
    for row in out.itertuples():
        if row.alerted:
            assert set(row.rule_risk_types) <= set(row.risk_types)
        assert set(row.model_risk_types) <= set(row.risk_types)
        assert tuple(row.departments) == routing.departments_for(row.risk_types)
        if row.alerted:
            assert row.tier in ("red", "orange", "yellow")
            assert len(row.reasons) <= s.max_reasons
        else:
            assert row.tier == TIER_NONE and row.reasons == [] and row.risk_types == ()
        if row.source in ("model", "both"):
            assert row.model_risk_types  # from the per-type models
            assert row.reasons  # a model alert always has a risk-raising reason
    assert set(out.loc[model_alert, "model_risk_types"].explode()) <= {"illness", "housing"}


def test_explain_all_adds_reasons_and_changes_nothing_else() -> None:
    frame = feature_frame(300, seed=4)
    s = Settings(workers=1)
    alerts_only = score(frame, typed_model(), s, AS_OF)
    everyone = score(frame, typed_model(), s, AS_OF, explain_all=True)
    same = [c for c in alerts_only.columns if c != "reasons"]
    pd.testing.assert_frame_equal(alerts_only[same], everyone[same])
    alerted = alerts_only["alerted"].to_numpy()
    assert everyone["reasons"][alerted].tolist() == alerts_only["reasons"][alerted].tolist()
    assert (alerts_only["reasons"][~alerted].map(len) == 0).all()
    # every household whose model risk rests on a risk-raising group now has its reasons
    quiet = everyone[~alerted]
    assert (quiet["reasons"].map(len) > 0).mean() > 0.9
    assert all(1 <= len(r) <= s.max_reasons for r in quiet["reasons"] if r)


def test_without_type_models_types_come_from_reason_groups() -> None:
    out = score(feature_frame(400, seed=3), plain_model(), Settings(workers=1), AS_OF)
    modelled = out[out["source"].isin(["model", "both"])]
    assert len(modelled)
    for row in modelled.itertuples():
        groups = [r.group_key for r in row.reasons]
        if "medical_oop" in groups:
            assert "illness" in row.model_risk_types


def test_alerts_go_into_the_store(tmp_path: Path) -> None:
    out = score(feature_frame(400, seed=3), typed_model(), Settings(workers=1), AS_OF)
    alerts = to_new_alerts(out)
    assert len(alerts) == int(out["alerted"].sum())
    with open_store(f"sqlite:///{tmp_path / 'alerts.db'}") as store:
        report = store.add_alerts(alerts)
        assert len(report.created) == len(alerts)
        stored = store.get(report.created[0])
        assert stored.model_version == "doudi-risk/7" and stored.as_of == AS_OF
        assert stored.reasons and stored.reasons[0].scale == "probability points"
        again = store.add_alerts(to_new_alerts(out))  # idempotent re-run
        assert not again.created


def test_score_command_end_to_end(tmp_path: Path) -> None:
    import dataclasses

    from doudi import registry
    from jobs.cli import app

    settings = write_world(tmp_path / "ws")
    settings.key_file.parent.mkdir(parents=True)
    settings.key_file.write_bytes(b"k" * 32)  # the workspace's key (ingest makes it)
    settings.key_file.chmod(0o600)
    model = dataclasses.replace(typed_model(), meta=dict(typed_model().meta))
    registry.stamp(model.meta, registry.workspace(settings))  # this workspace's model
    model_dir = model.save(tmp_path / "model")
    out = tmp_path / "out" / "scores.csv"
    env = {"DOUDI_HOME": str(settings.home), "DOUDI_WORKERS": "1", "DOUDI_OPERATOR": "clerk01",
           "DOUDI_CAPACITY_PCT": "20", "DOUDI_TIERS__YELLOW_TOP_PCT": "20",
           "DOUDI_TIERS__MIN_ALERT_RISK": "0"}
    # the world's last delivery is 2026-03: scoring 2026-06 on it is a deliberate run
    # a model folder is never the champion: refused without the flag, logged with it
    args = ["score", "--as-of", "2026-06", "--allow-undelivered", "--model", str(model_dir),
            "--out", str(out)]
    result = CliRunner().invoke(app, args, env=env)
    assert "is a model folder, not this workspace's champion" in str(result.exception)
    result = CliRunner().invoke(app, [*args, "--allow-non-champion"], env=env)
    assert result.exit_code == 0, result.output
    exported = pd.read_csv(out, dtype={"household_id": str})
    assert sorted(exported["household_id"]) == sorted(v[1] for v in HOUSEHOLDS.values())
    assert list(exported.columns) == ["household_id", "as_of", "risk", "tier", "risk_types",
                                      "departments", "reasons", "rule_triggers",
                                      "model_version"]
    assert not any(k in out.read_text(encoding="utf-8") for k in HOUSEHOLDS)  # no pseudonyms
    assert (out.stat().st_mode & 0o777) == 0o600
    d_house = exported[exported["household_id"] == HOUSEHOLDS[D_GRADE_HOUSE][1]].iloc[0]
    assert "R_HOUSE_D" in d_house["rule_triggers"] and "housing" in d_house["departments"]
    with open_store(settings=Settings(home=settings.home)) as store:
        alerts = list_alerts(store)
        assert len(alerts) == int((exported["tier"] != TIER_NONE).sum()) >= 3  # 20% of 12 + rule
        assert set(alerts["as_of"].astype(str)) == {"2026-06-30"}
        with store.transaction() as session:
            audits = session.scalars(select(ExportAudit)).all()
        assert {a.township_code: a.household_count for a in audits} == {"620102001": 7,
                                                                          "620102002": 5}
        assert {a.actor for a in audits} == {"clerk01"}
        assert {a.file_path for a in audits} == {str(out)}
    vault_log = (settings.vault_dir / "audit.jsonl").read_text(encoding="utf-8")
    assert "operator score export" in vault_log


def test_explain_all_needs_an_out_file(tmp_path: Path) -> None:
    from jobs.cli import app

    result = CliRunner().invoke(app, ["score", "--as-of", "2026-06", "--explain-all"],
                                env={"DOUDI_HOME": str(tmp_path / "ws")})
    assert result.exit_code != 0  # a UserError: `doudi` prints it in one line, exit 2
    assert "--explain-all writes its reasons to --out" in str(result.exception)


def test_score_command_without_a_model_is_a_user_error(tmp_path: Path) -> None:
    from jobs.cli import app

    write_world(tmp_path / "ws")  # delivered through 2026-03
    result = CliRunner().invoke(app, ["score", "--as-of", "2026-03", "--model",
                                      str(tmp_path / "none")],
                                env={"DOUDI_HOME": str(tmp_path / "ws")})
    assert result.exit_code != 0
    assert "no such model folder" in str(result.exception)


@pytest.mark.parametrize("suffix", [".parquet"])
def test_operator_export_parquet(tmp_path: Path, suffix: str) -> None:
    from serving.export import write_operator_export

    settings = write_world(tmp_path / "ws")
    frame = feature_frame(len(HOUSEHOLDS), seed=5)
    frame["household_key"] = list(HOUSEHOLDS)
    frame["village_code"] = [v[0] for v in HOUSEHOLDS.values()]
    out = score(frame, typed_model(), settings, AS_OF)
    path = tmp_path / f"scores{suffix}"
    with open_store(settings=settings) as store:
        assert write_operator_export(out, path, settings, store) == len(HOUSEHOLDS)
    back = pd.read_parquet(path)
    assert set(back["household_id"]) == {v[1] for v in HOUSEHOLDS.values()}


def test_a_frame_of_another_month_is_refused() -> None:
    with pytest.raises(ValueError, match="2026-06-30"):
        score(feature_frame(20), plain_model(), Settings(workers=1), date(2026, 5, 31))


def test_rule_only_alerts_are_capped_strongest_first() -> None:
    rule_score = np.array([0.0, 3.0, 1.0, 1.0, 2.0, 5.0])
    risk = np.array([0.9, 0.1, 0.3, 0.2, 0.1, 0.1])
    model_alert = np.array([True, False, False, False, False, True])  # 5: model alert anyway
    keys = np.array(["a", "b", "c", "d", "e", "f"])
    s = Settings(rule_capacity_pct=50)  # 3 of 6 households
    kept = rule_only_capped(rule_score, risk, model_alert, keys, s)
    # candidates b (3.0), e (2.0), c (1.0, risk .3), d (1.0, risk .2): the first three stay
    assert kept.tolist() == [False, True, True, False, True, False]
    assert not rule_only_capped(rule_score, risk, model_alert, keys,
                                Settings(rule_capacity_pct=0)).any()
