"""A bad or wrong model never reaches caseworkers unnoticed (issue #11).

The gate's floor: no version becomes champion, the first one neither, unless its
out-of-time test block shows it beats chance, the departments' rules and the logistic
baseline and is calibrated. `doudi promote` of such a version needs `--force` (recorded);
`doudi score --model` with anything but the champion needs `--allow-non-champion` (logged).
Real fits, a real MLflow SQLite store, the real CLI.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from doudi import registry
from doudi.errors import UserError
from doudi.settings import Settings
from tests.jobs.cli import doudi, refused
from tests.training.conftest import mlflow_store, mlflow_template  # noqa: F401  (fixtures)
from training import tracking
from training.core import FitResult, TrainConfig, fit_evaluate
from training.gate import GateConfig, floor_check
from training.synthetic import feature_columns, make_panel

# Small trees for 8,000 rows: with 31 leaves and 20 rows a leaf the booster over-fits this
# additive panel and trails the logistic baseline by 0.05 PR-AUC, which the floor refuses.
CONFIG = TrainConfig(num_threads=1, learning_rate=0.05, num_leaves=7, min_child_samples=50,
                     n_estimators=300, early_stopping_rounds=30)
WS = registry.Workspace.from_key(b"g" * 32)
Fit = tuple[FitResult, pd.DataFrame, pd.Series, pd.Series]


def _earth_rule(X: pd.DataFrame) -> np.ndarray:
    """A department's rule of thumb: earthen housing. Weak, but better than chance."""
    return (X["housing"].astype(str) == "earth").to_numpy(dtype=np.float64)


@pytest.fixture(scope="module")
def panel() -> pd.DataFrame:
    # 800 households x 10 months at 8%: the test month holds ~60 positives.
    return make_panel(n_households=800, n_months=10, n_features=8, positive_rate=0.08, seed=3)


_FITS: dict[str, Fit] = {}


def _fit(panel: pd.DataFrame, kind: str) -> Fit:
    """`good`: the true labels. `shuffled`: every label permuted (the issue's useless model:
    ROC-AUC ~0.5). Cached: tests only read the fits."""
    if kind not in _FITS:
        X, y, t = panel[feature_columns(panel)], panel["label"].copy(), panel["as_of"]
        if kind == "shuffled":
            y = pd.Series(np.random.default_rng(0).permutation(y.to_numpy()), index=y.index)
        result = fit_evaluate(X, y, t, config=CONFIG, rule_scores={"earth": _earth_rule})
        _FITS[kind] = (result, X, y, t)
    return _FITS[kind]


def _track(fit: Fit, as_of: str, store: tuple[str, str]) -> tracking.TrackOutcome:
    result, X, y, t = fit
    return tracking.track_run(result, X, y, t, as_of=as_of, workspace=WS,
                              tracking_uri=store[0], artifact_location=store[1])


def _champion(store: tuple[str, str]) -> str | None:
    mv = registry.champion(registry.client(store[0]), WS)
    return None if mv is None else str(mv.version)


def test_a_shuffled_label_model_is_never_champion(panel: pd.DataFrame,
                                                  mlflow_store: tuple[str, str]) -> None:  # noqa: F811
    shuffled = _fit(panel, "shuffled")
    assert abs(shuffled[0].test_metrics["margin_roc_auc"] - 0.5) < 0.08
    # first version: the old gate made it champion whatever its quality
    first = _track(shuffled, "2023-10-31", mlflow_store)
    assert first.gate is not None and not first.gate.promote and not first.gate.floor_passed
    assert first.aliases == ["challenger"] and _champion(mlflow_store) is None
    failed = [r for r in first.gate.reasons if r.startswith("floor:") and
              r.endswith("kept as challenger")]
    assert any("above chance" in r and "no better than a coin" in r for r in failed), failed
    client = registry.client(mlflow_store[0])
    mv = client.get_model_version(WS.model_name, first.version)
    assert mv.tags["gate_floor"] == "failed" and mv.tags["gate_decision"] == "challenger"
    card = Path(client.download_artifacts(mv.run_id, "model_card.md")).read_text()
    for line in failed:  # every failed floor is a line of the model card
        assert f"- {line}" in card

    # promote refuses it in one line; --force makes it a (bad) champion, recorded
    with pytest.raises(UserError, match=r"did not clear the gate's floor .* with --force"):
        tracking.promote(first.version, workspace=WS, tracking_uri=mlflow_store[0])
    assert _champion(mlflow_store) is None
    tracking.promote(first.version, workspace=WS, tracking_uri=mlflow_store[0], force=True,
                     actor="op-7")
    mv = client.get_model_version(WS.model_name, first.version)
    assert mv.tags["champion_reason"] == "manual promote (forced past gate)"
    assert mv.tags["champion_forced_by"] == "op-7" and _champion(mlflow_store) == "1"

    # as challenger of that bad champion, an equally useless model stays challenger even
    # though it is "within tolerance" of the champion (the 0.527 over a bad one)
    again = _track(shuffled, "2023-10-30", mlflow_store)
    assert again.gate is not None and again.gate.champion_version == "1"
    assert not again.gate.promote and _champion(mlflow_store) == "1"
    assert any(r.startswith("roc_auc: challenger") and "within tolerance" in r
               for r in again.gate.reasons), again.gate.reasons

    # a good model on the same households passes the floor and replaces the bad champion
    good = _track(_fit(panel, "good"), "2023-10-29", mlflow_store)
    assert good.gate is not None and good.gate.promote and good.gate.floor_passed, \
        good.gate.reasons
    assert _champion(mlflow_store) == good.version == "3"
    floor = [r for r in good.gate.reasons if r.startswith("floor:")]
    assert not any(r.endswith("kept as challenger") for r in floor), floor
    assert any("vs the departments' rules" in r for r in floor)
    assert any("vs the logistic baseline" in r for r in floor)
    # it passed: promoting it by hand needs no --force and is recorded as before
    tracking.promote(good.version, workspace=WS, tracking_uri=mlflow_store[0])
    assert client.get_model_version(WS.model_name, "3").tags["champion_reason"] == \
        "manual promote"


def test_a_good_model_is_champion_first_time(panel: pd.DataFrame,
                                             mlflow_store: tuple[str, str]) -> None:  # noqa: F811
    first = _track(_fit(panel, "good"), "2023-10-31", mlflow_store)
    assert first.gate is not None and first.gate.promote, first.gate.reasons
    assert sorted(first.aliases) == ["challenger", "champion"]


def test_each_floor_check_refuses_on_its_own(panel: pd.DataFrame) -> None:
    """Hand-made test blocks: each check fails alone with its own line."""
    rng = np.random.default_rng(1)
    n = 2000
    y = (rng.random(n) < 0.05).astype(np.float64)
    margin = 2.0 * y + rng.standard_normal(n)  # a real signal
    prob = 1 / (1 + np.exp(-(margin - 4.0)))  # increasing in the margin
    from training import metrics

    recorded = {f"margin_{k}": v for k, v in metrics.ranking_summary(y, margin, 5.0).items()}
    weak = {"roc_auc": 0.6, "pr_auc": 0.06}
    baselines = {"rules": weak, "logistic": weak}

    def reasons(p: np.ndarray = prob, base: dict = baselines, **cfg: object) -> list[str]:
        ok, lines = floor_check(p, y, recorded, base, GateConfig(**cfg), 5.0)
        failed = [r for r in lines if r.endswith("kept as challenger")]
        assert ok == (not failed), lines
        return failed

    # calibrate prob to the block (Platt on itself) so only the checks under test can fail
    from training.calibration import fit_calibrator

    good_prob = fit_calibrator("platt", margin, y).apply(margin)
    assert reasons(good_prob) == []
    missing = reasons(good_prob, {"rules": weak})
    assert len(missing) == 1 and missing[0].startswith("floor: no logistic baseline on the test")
    strong = {"roc_auc": 0.99, "pr_auc": 0.9}
    assert len(reasons(good_prob, {"rules": strong, "logistic": weak})) == 2  # roc, pr
    assert "does not beat the departments' rules" in reasons(
        good_prob, {"rules": strong, "logistic": weak})[0]
    # ten times the risk on every household: ECE and the top band both refuse
    inflated = np.clip(good_prob * 10, 0, 1)
    failed = reasons(inflated)
    assert any(r.startswith("floor: ECE") for r in failed)
    assert any(r.startswith("floor: top 5%") and "outside [0.5, 2]" in r for r in failed)
    # too few positives: one line, nothing else judged
    few = reasons(good_prob, min_test_positives=int(y.sum()) + 1)
    assert len(few) == 1 and "too little to show" in few[0]


def test_floor_margins_come_from_settings() -> None:
    settings = Settings(gate_min_lift_over_rules={"roc_auc": 0.1},
                        gate_min_lift_over_logistic={"pr_auc": 0.0}, gate_max_ece_excess=0.02,
                        gate_top_band_ratio_min=0.8, gate_min_test_positives=50)
    cfg = GateConfig.from_settings(settings)
    assert cfg.min_lift_over_rules == {"roc_auc": 0.1}
    assert cfg.min_lift_over_logistic == {"pr_auc": 0.0}
    assert cfg.top_band_ratio == (0.8, 2.0) and cfg.min_test_positives == 50
    assert GateConfig().min_lift_over_rules == Settings().gate_min_lift_over_rules
    with pytest.raises(ValueError, match="give margins for roc_auc and/or pr_auc"):
        Settings(gate_min_lift_over_rules={})  # a floor with no metric lets anything through
    with pytest.raises(ValueError, match="not brier"):
        GateConfig(min_lift_over_logistic={"brier": 0.0})


# -- the CLI: a refused version is not scored by accident -------------------------------------

@pytest.fixture(scope="module")
def refused_home(small_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small world ingested and trained once: its test block holds a handful of
    positives, far too few to show anything, so its only version is refused by the floor."""
    import ingest
    from doudi.months import Month
    from training.job import train_monthly

    home = tmp_path_factory.mktemp("floor")
    settings = Settings(home=home, workers=1, mlflow_tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    ingest.ingest(small_world / "raw", settings)
    outcome = train_monthly(settings, Month.parse("2025-06"))
    assert outcome.gate is not None and not outcome.gate.promote
    assert any("too little to show" in r for r in outcome.gate.reasons)
    return home


def _copy(home: Path, tmp_path: Path) -> Path:
    mine = tmp_path / "home"
    shutil.copytree(home, mine)
    return mine


def test_score_refuses_a_non_champion_unless_told(refused_home: Path, tmp_path: Path) -> None:
    home = _copy(refused_home, tmp_path)
    name = registry.workspace(Settings(home=home)).model_name
    # no champion: the default is refused and says why
    refused(doudi(home, "score", "--as-of", "2025-06"),
            f"{name} has no champion: the gate refused all 1 version(s)")
    # the refused version, by URI, and a model folder: refused, nothing stored
    refused(doudi(home, "score", "--as-of", "2025-06", "--model", f"models:/{name}/1"),
            f"--model models:/{name}/1 is {name}/1, not this workspace's champion (none",
            "--allow-non-champion")
    assert not (home / "alerts.db").exists()
    client = registry.client(f"sqlite:///{home / 'mlflow.db'}")
    folder = Path(client.download_artifacts(
        client.get_model_version(name, "1").run_id, "model", str(tmp_path)))
    refused(doudi(home, "score", "--as-of", "2025-06", "--model", str(folder)),
            "is a model folder, not this workspace's champion")
    assert not (home / "alerts.db").exists()

    # with the flag it scores, warns, and records who did it
    done = doudi(home, "score", "--as-of", "2025-06", "--model", f"models:/{name}/1",
                 "--allow-non-champion", DOUDI_OPERATOR="op-42")
    assert done.code == 0, done.err
    warning = [line for line in done.err.splitlines() if line.startswith("warning: ")]
    assert len(warning) == 1 and f"registry version {name}/1, not the champion (none)" in \
        warning[0] and "by op-42" in warning[0]
    log = (home / "reports" / "non-champion-scoring.jsonl").read_text().splitlines()
    entry = json.loads(log[-1])
    assert entry["operator"] == "op-42" and entry["model_version"] == f"{name}/1"
    assert entry["as_of"] == "2025-06" and entry["champion"] is None
    assert entry["alerts_created"] > 0
    assert (home / "reports" / "non-champion-scoring.jsonl").stat().st_mode & 0o077 == 0
    from serving.store import open_store
    from serving.store.models import StatusChange

    with open_store(settings=Settings(home=home)) as store, store.transaction() as session:
        actors = {a for (a,) in session.query(StatusChange.actor).distinct()}
    assert actors == {"doudi score --allow-non-champion (op-42)"}


def test_forced_promote_is_recorded_and_then_scores(refused_home: Path, tmp_path: Path) -> None:
    home = _copy(refused_home, tmp_path)
    name = registry.workspace(Settings(home=home)).model_name
    line = refused(doudi(home, "promote", "1"), f"{name}/1 did not clear the gate's floor",
                   "--force")
    assert "too little to show" in line
    done = doudi(home, "promote", "1", "--force", DOUDI_OPERATOR="op-9")
    assert done.code == 0 and f"{name}/1 is now champion" in done.out, done.err
    assert "forced past gate" in done.err and "op-9" in done.err
    mv = registry.client(f"sqlite:///{home / 'mlflow.db'}").get_model_version(name, "1")
    assert mv.tags["champion_reason"] == "manual promote (forced past gate)"
    assert mv.tags["champion_forced_by"] == "op-9"
    # now it is the champion: scoring with it by URI needs no flag and logs nothing
    done = doudi(home, "score", "--as-of", "2025-06", "--model", f"models:/{name}/1")
    assert done.code == 0 and "warning" not in done.err, done.err
    assert not (home / "reports" / "non-champion-scoring.jsonl").exists()
