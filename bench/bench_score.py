"""Benchmark: score a province and explain its alerts; explain everyone; vs shap.

    .venv/bin/python bench/bench_score.py                   # 1M households, 3 repeats
    .venv/bin/python bench/bench_score.py --rows 200000 --repeats 1   # quicker
    .venv/bin/python bench/bench_score.py --from-workdir /tmp/doudi_quality/h20000_s7

1. `serving.scoring.score` on `--rows` households: prediction, tiers, rules, and
   TreeSHAP + reason texts for every alert (top 5% + rule alerts). By default the
   households are synthetic with the registry's features and the model is a stand-in
   (300 trees x 31 leaves, max_depth 5). With `--from-workdir` (a bench_quality.py
   workspace) the model is the one `doudi train` registered there (its newest version)
   and the households are its real scoring table at `--as-of`, resampled with new keys
   to `--rows`: the trees, and so the TreeSHAP cost, are those of production.
2. Explaining every household (`doudi score --explain-all`): `score(...,
   explain_all=True)` on `--sample` rows (all of them when --sample >= --rows),
   extrapolated to `--rows`.
3. The same `--compare` rows explained by our path, by LightGBM's own pred_contrib and
   by `shap.TreeExplainer`: times, ratios and the largest absolute difference.
Timings are medians of `--repeats` runs with `--threads` LightGBM threads.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import lightgbm as lgb
import numpy as np
import pandas as pd

from doudi.model_artifact import Calibrator, FeatureSpec, ModelArtifact
from doudi.settings import Settings
from features.registry import FEATURES
from features.rules import RULES
from serving.explain import Explainer
from serving.scoring import score

AS_OF = date(2026, 6, 30)


def synthetic_frame(n: int, seed: int = 0) -> pd.DataFrame:
    """Registry-shaped households: mostly quiet months, a few shocks, incomes above the line."""
    rng = np.random.default_rng(seed)
    cols: dict[str, np.ndarray] = {}
    for spec in FEATURES:
        if spec.dtype == "bool":
            cols[spec.name] = (rng.random(n) < 0.03).astype(np.float64)
        else:
            cols[spec.name] = rng.gamma(1.0, 2.0, n) * (rng.random(n) < 0.2)
    # Rule inputs are rare events (a few % of households trigger a rule, as in the
    # synthetic province); the columns set below get their own distributions.
    for name in {f for rule in RULES for f in rule.features}:
        cols[name] = cols[name] * (rng.random(n) < 0.004)
    cols["household_size"] = rng.integers(1, 7, n).astype(np.float64)
    cols["labour_capable_adults"] = np.maximum(cols["household_size"] - 1, 1)
    cols["medical_oop_12m"] = np.round(rng.gamma(0.6, 3000.0, n))
    cols["medical_inpatient_days_12m"] = rng.poisson(0.05, n).astype(np.float64)
    cols["medical_oop_6m"] = np.round(cols["medical_oop_12m"] * rng.random(n))
    cols["housing_safety_level"] = rng.choice([1.0, 2.0, 3.0, 4.0], n, p=[.6, .3, .09, .01])
    cols["income_to_monitoring_line"] = 0.95 + rng.gamma(4.0, 0.5, n)
    cols["income_after_rigid_to_monitoring_line"] = cols["income_to_monitoring_line"] - 0.05
    cols["income_per_capita"] = cols["income_to_monitoring_line"] * 7900.0
    villages = rng.integers(0, 8000, n)
    keys = pd.DataFrame({
        "household_key": [f"h_{i:020x}" for i in range(n)],
        "as_of": np.full(n, np.datetime64(AS_OF, "ms")),
        "county_code": [f"62{v // 400:04d}" for v in villages],
        "village_code": [f"62{v // 400:04d}{v % 400:06d}" for v in villages],
    })
    return pd.concat([keys, pd.DataFrame(cols)], axis=1)


def train(frame: pd.DataFrame, threads: int, rows: int = 50_000) -> ModelArtifact:
    specs = tuple(FeatureSpec(s.name, "numeric") for s in FEATURES)
    X = frame[[s.name for s in specs]].to_numpy(dtype=np.float64)[:rows]
    rng = np.random.default_rng(1)
    z = (X[:, [s.name for s in specs].index("medical_oop_12m")] / 3000
         - X[:, [s.name for s in specs].index("income_to_monitoring_line")]
         + X[:, :40] @ rng.normal(0, 0.15, 40) - 2.0)
    y = (rng.random(len(X)) < 1 / (1 + np.exp(-z))).astype(np.float64)
    params = {"objective": "binary", "num_leaves": 31, "max_depth": 5, "learning_rate": 0.05,
              "min_data_in_leaf": 20, "num_threads": threads, "verbosity": -1, "seed": 0}
    booster = lgb.train(params, lgb.Dataset(X, label=y), num_boost_round=300)
    return ModelArtifact(booster, specs, Calibrator("identity"),
                         meta={"model_version": "bench"})


def from_workdir(workdir: Path, as_of: str, rows: int, settings: Settings,
                 version: str | None = None) -> tuple[pd.DataFrame, ModelArtifact]:
    """A bench_quality workspace's registered model (`version`, default the newest) and
    its scoring table at `as_of`, resampled (with replacement) to `rows` households."""
    from doudi import registry
    from doudi.months import Month
    from features import scoring_table

    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    bench_home = Settings(home=workdir / "home", mlflow_tracking_uri=uri)
    name = registry.workspace(bench_home).model_name
    versions = registry.known_versions(registry.client(uri), name)
    version = version or str(versions[-1].version)
    artifact, label = registry.load_model(f"models:/{name}/{version}", bench_home)
    artifact.meta["model_version"] = label
    table = scoring_table(workdir / "home" / "warehouse", Month.parse(as_of, what="--as-of"),
                          settings)
    picked = np.random.default_rng(0).integers(0, len(table), rows)
    frame = table.iloc[picked].reset_index(drop=True)
    frame["household_key"] = [f"h_{i:020x}" for i in range(rows)]
    return frame, artifact


def median_time(fn: Any, repeats: int, label: str = "") -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeats):
        start, cpu = time.perf_counter(), time.process_time()
        result = fn()
        times.append(time.perf_counter() - start)
        if label:  # progress on stderr: a loaded machine makes runs long. CPU seconds
            # (all threads) / threads estimates the time on otherwise idle cores.
            print(f"{label}: run {len(times)} {times[-1]:.2f}s wall, "
                  f"{time.process_time() - cpu:.2f}s cpu", file=sys.stderr, flush=True)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--sample", type=int, default=100_000)
    parser.add_argument("--compare", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--from-workdir", type=Path, default=None,
                        help="bench_quality.py workspace: its real model and households.")
    parser.add_argument("--as-of", default="2025-06", help="With --from-workdir.")
    parser.add_argument("--model-version", default=None,
                        help="With --from-workdir: registered version (default newest).")
    args = parser.parse_args()
    report: dict[str, Any] = {"rows": args.rows, "threads": args.threads,
                              "repeats": args.repeats, "features": len(FEATURES),
                              "load_average_start": os.getloadavg()}

    settings = Settings(workers=args.threads)
    start = time.perf_counter()
    if args.from_workdir is not None:
        frame, artifact = from_workdir(args.from_workdir, args.as_of, args.rows, settings,
                                       args.model_version)
        report["model"] = artifact.meta["model_version"]
        report["build_frame_s"] = time.perf_counter() - start
    else:
        frame = synthetic_frame(args.rows)
        report["build_frame_s"] = time.perf_counter() - start
        start = time.perf_counter()
        artifact = train(frame, args.threads)
        report["train_s"] = time.perf_counter() - start
        report["model"] = "stand-in (300 trees)"
    print(f"frame and model in {time.perf_counter() - start:.1f}s", file=sys.stderr, flush=True)
    report["trees"] = artifact.booster.num_trees()
    as_of = pd.Timestamp(frame["as_of"].iloc[0]).date()
    explainer = Explainer(artifact, max_reasons=settings.max_reasons)

    # 1. score everyone, explain the alerts
    seconds, scored = median_time(
        lambda: score(frame, artifact, settings, as_of, explainer=explainer), args.repeats,
        "score+explain alerts")
    report["score_and_explain_alerts_s"] = seconds
    report["alerts"] = int(scored["alerted"].sum())
    report["alerts_by_source"] = scored.loc[scored["alerted"], "source"].value_counts().to_dict()
    X = artifact.encode(frame)
    report["predict_only_s"], _ = median_time(
        lambda: artifact.booster.predict(X, raw_score=True, num_threads=args.threads),
        args.repeats)
    example = scored[scored["alerted"]].iloc[0]
    report["example_reasons"] = [r.text_zh for r in example["reasons"]]

    # 2. explain everyone (`doudi score --explain-all`): score() with reasons for all rows
    # of a sample (the whole frame when --sample >= --rows), extrapolated to --rows
    sample = frame.iloc[: args.sample]
    seconds, everyone = median_time(
        lambda: score(sample, artifact, settings, as_of, explainer=explainer,
                      explain_all=True), args.repeats, "score + explain all")
    report["explain_sample_rows"] = len(sample)
    report["explain_sample_s"] = seconds
    report["explain_all_extrapolated_min"] = seconds * args.rows / len(sample) / 60
    report["explained_share"] = float((everyone["reasons"].map(len) > 0).mean())

    # 3. side by side on the same rows
    rows = X[: args.compare]
    ours_s, ours = median_time(
        lambda: explainer.contributions(rows, num_threads=args.threads), args.repeats, "ours")
    grouping_s, _ = median_time(lambda: explainer.reasons_from(rows, ours), args.repeats,
                                "grouping+text")
    lgb_s, native = median_time(
        lambda: artifact.booster.predict(rows, pred_contrib=True, num_threads=args.threads),
        args.repeats, "lightgbm pred_contrib")
    import shap

    tree_explainer = shap.TreeExplainer(artifact.booster)
    shap_s, shap_values = median_time(lambda: tree_explainer.shap_values(rows), args.repeats,
                                      "shap TreeExplainer")
    shap_values = np.asarray(shap_values)
    report["compare"] = {
        "rows": len(rows),
        "ours_contrib_s": ours_s,
        "ours_grouping_and_text_s": grouping_s,
        "lightgbm_pred_contrib_s": lgb_s,
        "shap_tree_explainer_s": shap_s,
        "shap_over_ours_contrib": shap_s / ours_s,
        "ours_total_over_lightgbm": (ours_s + grouping_s) / lgb_s,
        "max_abs_diff_ours_vs_lightgbm": float(np.max(np.abs(ours - native))),
        "max_abs_diff_ours_vs_shap": float(np.max(np.abs(ours[:, :-1] - shap_values))),
        "max_abs_additivity_error": float(np.max(np.abs(
            ours.sum(axis=1) - artifact.booster.predict(rows, raw_score=True)))),
    }
    report["load_average_end"] = os.getloadavg()
    print(json.dumps(report, ensure_ascii=False, indent=1, default=str))


if __name__ == "__main__":
    main()
