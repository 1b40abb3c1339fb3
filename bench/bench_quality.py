"""Model quality against the generator's oracle: the headline of the model card.

    .venv/bin/python bench/bench_quality.py --households 20000 --workdir /tmp/doudi_quality

Simulates a province (36 months from 2023-01), ingests it, trains the model as of the
first month for which the generator's truth holds an oracle probability (so it knows
only what was reported by then, exactly as in production: its latest training as-of
month is H + allowance months earlier), then scores that month and the following
oracle months and compares, on the same in-scope households: the model, the
departments' rules and the oracle (which sees the latent state no extract shows).

Training later than the first scored month would leak: a training row's label window
(the H months after its as-of date) would overlap the scored months' windows, and a
booster that memorises households would be rewarded for it. The logistic-regression
baseline is the one `doudi train` evaluates on its own out-of-time test fold.

The model is scored twice: ranked by its raw margin (what serving ranks, tiers and caps
by) and ranked by its calibrated risk (what is shown). A strictly increasing calibrator
gives identical rows; `--calibration isotonic` trains with the legacy step map to show
what its ties cost (the gate refuses that version; the benchmark scores it anyway).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


MODEL_MARGIN = "doudi model, margin ranking (served)"
MODEL_CALIBRATED = "doudi model, calibrated-risk ranking"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--households", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/doudi_quality"))
    ap.add_argument("--train-as-of", default=None,
                    help="Training month YYYY-MM (default: the first oracle month; later "
                         "months leak labels into the scored months).")
    ap.add_argument("--early-stopping-holdout", type=float, default=None,
                    help="Override TrainConfig.early_stopping_holdout (0 = the old "
                         "period-only early-stopping slice), for comparison.")
    ap.add_argument("--calibration", default=None,
                    choices=["auto", "isotonic_logit", "platt", "identity", "isotonic"],
                    help="Override TrainConfig.calibration (isotonic = the legacy step map "
                         "that ties households), for comparison.")
    args = ap.parse_args()

    import ingest
    from doudi.months import Month
    from doudi.settings import Settings
    from features import scoring_table
    from features.rules import rule_score
    from ingest.pseudonyms import load_key, pseudonym
    from province import simulate
    from training import metrics as m
    from training.job import train_monthly

    work = args.workdir / f"h{args.households}_s{args.seed}"
    home = work / "home"
    settings = Settings(home=home, mlflow_tracking_uri=f"sqlite:///{work / 'mlflow.db'}")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if not (work / "province" / "truth" / "summary.json").is_file():
        simulate(work / "province", households=args.households, months=36, start="2023-01",
                 seed=args.seed, settings=settings)
    timings["simulate_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ingest.ingest(work / "province" / "raw", settings)
    timings["ingest_s"] = time.perf_counter() - t0
    truth = work / "province" / "truth"
    oracle = pd.read_parquet(truth / "oracle.parquet")
    train_as_of = args.train_as_of or str(min(oracle["as_of"]))[:7]
    t0 = time.perf_counter()
    config = None
    if args.early_stopping_holdout is not None or args.calibration is not None:
        import features
        from training.core import TrainConfig

        overrides: dict[str, object] = {}
        if args.early_stopping_holdout is not None:
            overrides["early_stopping_holdout"] = args.early_stopping_holdout
        if args.calibration is not None:
            overrides["calibration"] = args.calibration
        config = TrainConfig(gap_periods=settings.horizon_months,
                             feature_registry_version=str(features.REGISTRY_VERSION),
                             **overrides)  # type: ignore[arg-type]
    outcome = train_monthly(settings, Month.parse(train_as_of), config=config)
    timings["train_s"] = time.perf_counter() - t0

    from doudi import registry

    client = registry.client(settings.tracking_uri())
    name = registry.workspace(settings).model_name
    mv = client.get_model_version(name, outcome.version)
    run_metrics = client.get_run(mv.run_id).data.metrics
    artifact, _ = registry.load_model(f"models:/{name}/{outcome.version}", settings)

    labels = pd.read_parquet(truth / "labels.parquet")
    key = load_key(settings.key_file, create=False)
    assert key is not None
    frames = []
    for as_of in sorted(oracle["as_of"].unique()):
        table = scoring_table(settings.warehouse_dir, Month.of(pd.Timestamp(as_of)), settings)
        margin = artifact.raw_margin(table, num_threads=settings.workers)
        scored = pd.DataFrame({
            "household_key": table["household_key"].astype(str).to_numpy(),
            "margin": margin,
            "model": artifact.calibrator.apply(margin),
            "rules": np.asarray(rule_score(table, settings), dtype=float),
        })
        month_truth = labels[(labels["as_of"] == as_of) & labels["in_scope"]]
        month_truth = month_truth.assign(
            household_key=[pseudonym(key, "household", h) for h in month_truth["household_id"]]
        )
        month_oracle = oracle[oracle["as_of"] == as_of].assign(
            household_key=lambda d: [pseudonym(key, "household", h) for h in d["household_id"]]
        )
        merged = scored.merge(month_truth[["household_key", "label"]], on="household_key")
        merged = merged.merge(month_oracle[["household_key", "probability"]],
                              on="household_key", how="left")
        merged["as_of"] = as_of
        frames.append(merged)
    data = pd.concat(frames, ignore_index=True)
    y_all = data["label"].astype(int).to_numpy()
    with_oracle = data[data["probability"].notna()]
    y = with_oracle["label"].astype(int).to_numpy()

    def row(name: str, p: np.ndarray) -> dict[str, float]:
        return {
            "scorer": name,
            "roc_auc": m.roc_auc(y, p),
            "pr_auc": m.pr_auc(y, p),
            "precision_at_5pct": m.precision_at_k(y, p, 5.0),
            "recall_at_5pct": m.recall_at_k(y, p, 5.0),
        }

    table_rows = [
        row("oracle (latent state)", with_oracle["probability"].to_numpy()),
        row(MODEL_MARGIN, with_oracle["margin"].to_numpy()),
        row(MODEL_CALIBRATED, with_oracle["model"].to_numpy()),
        row("department rules", with_oracle["rules"].to_numpy()),
    ]
    result = pd.DataFrame(table_rows).set_index("scorer")
    ratios = result.loc[MODEL_MARGIN] / result.loc["oracle (latent state)"]
    # Ties: households the calibrated risk cannot tell apart although the margin can.
    months = data.groupby("as_of")
    ties = {
        "households_per_month_mean": float(months.size().mean()),
        "distinct_margins_per_month_mean": float(months["margin"].nunique().mean()),
        "distinct_risks_per_month_mean": float(months["model"].nunique().mean()),
    }
    slope, intercept = m.calibration_slope(y_all, data["model"].to_numpy())
    summary = {
        "households": args.households,
        "train_as_of": train_as_of,
        "model_version": outcome.version,
        "calibration": artifact.calibrator.method,
        "gate_promoted": None if outcome.gate is None else outcome.gate.promote,
        "ties": ties,
        "rounds": artifact.booster.current_iteration(),
        "as_of_months": [str(a) for a in sorted(data["as_of"].unique())],
        "rows_scored": len(data),
        "rows_with_oracle": len(with_oracle),
        "positives_with_oracle": int(y.sum()),
        "base_rate_all": float(y_all.mean()),
        "model_ece_20_equal_freq_all": m.expected_calibration_error(y_all, data["model"], 20),
        "model_calibration_slope_all": slope,
        "model_calibration_intercept_all": intercept,
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "training_run_test_fold_metrics": {
            k: round(v, 4) for k, v in sorted(run_metrics.items())
            if k.startswith(("test_", "lr_", "rules_", "logistic", "baseline",
                             "calibration_"))
        },
    }
    _headline_into_model_card(client, mv.run_id, result, ratios, summary)
    print(result.round(3).to_string())
    print("\nmodel / oracle ratios:")
    print(ratios.round(3).to_string())
    print(json.dumps(summary, indent=1, default=str))


def _headline_into_model_card(client, run_id: str, result: pd.DataFrame, ratios: pd.Series,
                              summary: dict) -> None:
    """Put the oracle comparison at the top of the run's model card (and as metrics).

    Training cannot know the oracle (it lives in the generator's truth), so this
    benchmark, which has both, writes the headline the model card leads with.
    """
    import tempfile

    from mlflow.artifacts import download_artifacts

    card = Path(download_artifacts(run_id=run_id, artifact_path="model_card.md",
                                   tracking_uri=client.tracking_uri)).read_text(encoding="utf-8")
    lines = ["## Headline: against the generator's oracle (bench/bench_quality.py)", "",
             f"As-of months {', '.join(summary['as_of_months'])}, never seen in training; "
             f"{summary['rows_with_oracle']:,} in-scope household-months with an oracle "
             f"probability, {summary['positives_with_oracle']} identified within 6 months.", "",
             "| scorer | ROC-AUC | PR-AUC | precision@5% | recall@5% |", "|---|---|---|---|---|"]
    for name, r in result.iterrows():
        lines.append(f"| {name} | {r.roc_auc:.3f} | {r.pr_auc:.3f} | "
                     f"{r.precision_at_5pct:.3f} | {r.recall_at_5pct:.3f} |")
    lines.append(f"| model (margin) / oracle | {ratios.roc_auc:.3f} | {ratios.pr_auc:.3f} | "
                 f"{ratios.precision_at_5pct:.3f} | {ratios.recall_at_5pct:.3f} |")
    title, _, rest = card.partition("\n")
    begin, end = "<!-- oracle headline -->", "<!-- /oracle headline -->"
    if begin in rest and end in rest:  # a rerun replaces its own earlier headline
        before, _, after = rest.partition(begin)
        rest = before.rstrip("\n") + after.partition(end)[2]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model_card.md"
        headline = "\n".join([begin, *lines, end])
        path.write_text(f"{title}\n\n{headline}\n" + rest, encoding="utf-8")
        client.log_artifact(run_id, str(path))
    for metric in ("roc_auc", "pr_auc", "precision_at_5pct"):
        client.log_metric(run_id, f"oracle_{metric}", float(result.loc["oracle (latent state)",
                                                                        metric]))
        client.log_metric(run_id, f"model_over_oracle_{metric}", float(ratios[metric]))
        for label, scorer in (("margin", MODEL_MARGIN), ("calibrated", MODEL_CALIBRATED)):
            client.log_metric(run_id, f"oracle_window_{label}_{metric}",
                              float(result.loc[scorer, metric]))


if __name__ == "__main__":
    main()
