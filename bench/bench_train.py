"""Benchmark: train, cross-validate, calibrate and register on a province-sized panel.

Default: 100k households x 24 as-of months (2.4M rows), 100 features (98 numeric incl.
missing values + 2 categoricals), ~3% positives, synthetic with signal
(`training.synthetic.make_panel`). Measures `fit_evaluate` + `track_run` (MLflow SQLite in a
temporary folder) and, on the same train/test split, the obvious alternatives:
  * LightGBM, 1000 fixed rounds, no early stopping, no CV, no calibration;
  * scikit-learn HistGradientBoostingClassifier (its own random-holdout early stopping).

    .venv/bin/python bench/bench_train.py                 # full size, 1 repeat
    .venv/bin/python bench/bench_train.py --households 5000 --repeats 3   # quick
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import lightgbm as lgb
import numpy as np
import pandas as pd

from doudi.registry import Workspace
from training import metrics
from training.core import TrainConfig, fit_evaluate
from training.synthetic import feature_columns, make_panel
from training.tracking import track_run


def _ours(X: pd.DataFrame, y: pd.Series, t: pd.Series, household: pd.Series,
          config: TrainConfig, store: str) -> dict[str, float]:
    start = time.perf_counter()
    # household ids as `doudi train` passes them: lead time and the early-stopping holdout
    result = fit_evaluate(X, y, t, config=config, household=household)
    fitted = time.perf_counter()
    outcome = track_run(result, X, y, t, as_of=str(t.max().date()),
                        workspace=Workspace.from_key(b"bench-train-workspace-key-32bytes"),
                        tracking_uri=f"sqlite:///{store}/mlflow.db",
                        artifact_location=f"{store}/artifacts")
    done = time.perf_counter()
    m = result.test_metrics
    return {"total_s": done - start, "fit_evaluate_s": fitted - start,
            "track_s": done - fitted, **{f"timing_{k}": v for k, v in result.timings.items()},
            "roc_auc": m["roc_auc"], "pr_auc": m["pr_auc"], "brier": m["brier"],
            "ece": m["ece"], "precision_at_k": m["precision_at_k"],
            "rounds": float(result.artifact.meta["rounds"]), "version": float(outcome.version),
            "calibration": result.calibration["method"]}  # type: ignore[dict-item]


def _split(t: pd.Series, gap: int) -> tuple[np.ndarray, np.ndarray]:
    months = np.sort(t.unique())
    train = (t <= months[-1 - gap - 1]).to_numpy()
    return train, (t == months[-1]).to_numpy()


def _lightgbm_fixed(X: pd.DataFrame, y: pd.Series, train: np.ndarray, test: np.ndarray,
                    threads: int) -> dict[str, float]:
    from doudi.model_artifact import encode_frame
    from training.core import feature_specs

    start = time.perf_counter()
    specs = feature_specs(X)
    Xm = encode_frame(X, specs)
    cats = [i for i, s in enumerate(specs) if s.kind == "categorical"]
    booster = lgb.train({"objective": "binary", "num_leaves": 31, "max_depth": 5,
                         "learning_rate": 0.05, "num_threads": threads, "verbosity": -1},
                        lgb.Dataset(Xm[train], y.to_numpy()[train], categorical_feature=cats),
                        num_boost_round=1000)
    p = booster.predict(Xm[test], num_threads=threads)
    yt = y.to_numpy()[test]
    return {"total_s": time.perf_counter() - start, "roc_auc": metrics.roc_auc(yt, p),
            "pr_auc": metrics.pr_auc(yt, p), "brier": metrics.brier(yt, p),
            "ece": metrics.expected_calibration_error(yt, p)}


def _hist_gb(X: pd.DataFrame, y: pd.Series, train: np.ndarray, test: np.ndarray
             ) -> dict[str, float]:
    from sklearn.ensemble import HistGradientBoostingClassifier

    start = time.perf_counter()
    Xc = X.copy()
    for c in Xc.columns:
        if not pd.api.types.is_numeric_dtype(Xc[c]):
            Xc[c] = Xc[c].astype("category")
    model = HistGradientBoostingClassifier(max_iter=300, learning_rate=0.1, max_depth=5,
                                           max_leaf_nodes=31, categorical_features="from_dtype",
                                           early_stopping=True, random_state=0)
    model.fit(Xc[train], y[train])
    p = model.predict_proba(Xc[test])[:, 1]
    yt = y.to_numpy()[test]
    return {"total_s": time.perf_counter() - start, "roc_auc": metrics.roc_auc(yt, p),
            "pr_auc": metrics.pr_auc(yt, p), "brier": metrics.brier(yt, p),
            "ece": metrics.expected_calibration_error(yt, p), "iterations": float(model.n_iter_)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--households", type=int, default=100_000)
    ap.add_argument("--months", type=int, default=24)
    ap.add_argument("--features", type=int, default=98, help="numeric; +2 categoricals")
    ap.add_argument("--rate", type=float, default=0.03)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--negative-sample-rate", type=float, default=1.0)
    ap.add_argument("--skip-alternatives", action="store_true")
    ap.add_argument("--skip-lightgbm-fixed", action="store_true",
                    help="skip the 1000-round alternative (slowest part at full size)")
    ap.add_argument("--compare-imbalance", action="store_true",
                    help="only compare imbalance handling (none / scale_pos_weight / "
                         "is_unbalance), each followed by out-of-time calibration")
    args = ap.parse_args()

    start = time.perf_counter()
    panel = make_panel(args.households, args.months, args.features, args.rate, seed=0)
    X, y, t = panel[feature_columns(panel)], panel["label"], panel["as_of"]
    household = panel["household_key"]
    del panel
    gen_s = time.perf_counter() - start
    config = TrainConfig(num_threads=args.threads, gap_periods=6, n_folds=3,
                         learning_rate=0.1, n_estimators=400, early_stopping_rounds=30,
                         min_child_samples=200, bagging_fraction=0.5,
                         negative_sample_rate=args.negative_sample_rate)
    print(json.dumps({"rows": len(X), "features": X.shape[1], "positive_rate": float(y.mean()),
                      "generate_s": round(gen_s, 1), "load_avg": os.getloadavg()}), flush=True)
    if args.compare_imbalance:
        for mode in ("none", "scale_pos_weight", "is_unbalance"):
            t0 = time.perf_counter()
            res = fit_evaluate(X, y, t, config=config.model_copy(update={
                "imbalance": mode, "logistic_baseline": False}))
            m = res.test_metrics
            print(json.dumps({"imbalance": mode, "seconds": round(time.perf_counter() - t0, 1),
                              **{k: round(m[k], 4) for k in ("roc_auc", "pr_auc",
                                 "precision_at_k", "brier", "ece", "calibration_slope")},
                              "raw_brier": round(float(res.fold_metrics.query(
                                  "scorer == 'lightgbm_raw' and is_test")["brier"].iloc[0]), 4),
                              "calibration": res.calibration["method"]}), flush=True)
        return
    runs = []
    for r in range(args.repeats):
        with tempfile.TemporaryDirectory() as store:
            runs.append(_ours(X, y, t, household, config, store))
        print(json.dumps({"run": r, **runs[-1]}, default=str), flush=True)
    summary: dict[str, object] = {
        "ours_median_total_s": statistics.median(r["total_s"] for r in runs),
        "ours_median_fit_evaluate_s": statistics.median(r["fit_evaluate_s"] for r in runs),
    }
    if not args.skip_alternatives:
        train, test = _split(t, gap=6)
        if not args.skip_lightgbm_fixed:
            summary["lightgbm_fixed_1000_no_es"] = _lightgbm_fixed(X, y, train, test,
                                                                   args.threads)
            print(json.dumps(summary, default=str), flush=True)
        summary["sklearn_hist_gb"] = _hist_gb(X, y, train, test)
    summary["load_avg_end"] = os.getloadavg()
    print(json.dumps(summary, default=str), flush=True)


if __name__ == "__main__":
    main()
