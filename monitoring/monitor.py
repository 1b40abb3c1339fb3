"""`doudi monitor --as-of YYYY-MM`: is the champion still to be trusted this month?

One read of the warehouse (`features.labelled_table`: the reference months, the months
whose performance is followed, and the as-of month, labels known by the as-of month), then:

- drift against the champion's training reference (its latest `monitor.reference_months`
  training months, recomputed point in time): PSI per feature and for the score, share
  missing, mean |SHAP| (a sample of `monitor.shap_rows` rows each side); alert rate per
  township from the alert store;
- calibration by risk band and performance at capacity for every month from the
  `monitor.calibration_months` latest months with final labels to the as-of month, each
  scored by the model in production then (so final-label months are out of sample),
  estimated from the risks and realised from the labels and verdicts known so far;
- a plain recommendation with its reasons (thresholds: `Settings.monitor`).

`write_report` keeps the JSON and the feature table in <home>/reports/, `log_to_mlflow`
logs them to the experiment `doudi-monitor-<workspace>`. docs/monitoring.md.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from doudi.errors import UserError
from doudi.months import Month
from doudi.settings import Settings
from monitoring import drift, performance

if TYPE_CHECKING:
    from doudi.model_artifact import ModelArtifact

log = logging.getLogger(__name__)
FEATURE_DRIFT_COLUMNS = ["feature", "label_zh", "psi", "band", "missing_ref", "missing_now",
                         "mean_abs_shap_ref", "mean_abs_shap_now"]
TOWNSHIP_COLUMNS = ["township_code", "township_name", "in_scope", "alerts", "rate"]
BAND_CHECKED = "top 5%"  # the band tiers and caseworkers live in (docs/monitoring.md)


@dataclass(frozen=True)
class Recommendation:
    """Retrain now or not, and why (each reason in Chinese, then English)."""

    retrain: bool
    reasons: tuple[str, ...]

    def line(self) -> str:
        verdict = ("建议重新训练 retrain now" if self.retrain
                   else "暂不需要重新训练 no retraining needed")
        return f"{verdict}: {'; '.join(self.reasons) or '各项指标正常 all checks passed'}"


@dataclass(frozen=True)
class MonitorReport:
    """What `run_monitor` found (docs/monitoring.md describes every column)."""

    as_of: Month
    model_version: str
    reference: str
    feature_drift: pd.DataFrame
    score_psi: float
    score_band: str
    township_alerts: pd.DataFrame
    calibration_bands: pd.DataFrame
    performance: pd.DataFrame
    recommendation: Recommendation

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types (NaN as null): for the report file, MLflow and `doudi report`."""
        def rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
            return [{str(k): _plain(v) for k, v in r.items()}
                    for r in frame.to_dict("records")]

        return {
            "as_of": str(self.as_of), "model_version": self.model_version,
            "reference": self.reference, "score_psi": _plain(self.score_psi),
            "score_band": self.score_band,
            "recommendation": {"retrain": self.recommendation.retrain,
                               "reasons": list(self.recommendation.reasons),
                               "line": self.recommendation.line()},
            "feature_drift": rows(self.feature_drift),
            "township_alerts": rows(self.township_alerts),
            "calibration_bands": rows(self.calibration_bands),
            "performance": rows(self.performance),
        }

    @classmethod
    def from_json(cls, saved: dict[str, Any]) -> MonitorReport:
        """The inverse of `to_json` (the report file `doudi report` reuses)."""
        advice, psi = saved["recommendation"], saved.get("score_psi")
        return cls(
            as_of=Month.parse(saved["as_of"]), model_version=str(saved["model_version"]),
            reference=str(saved.get("reference", "")),
            feature_drift=pd.DataFrame(saved["feature_drift"]),
            score_psi=math.nan if psi is None else float(psi),
            score_band=str(saved["score_band"]),
            township_alerts=pd.DataFrame(saved["township_alerts"]),
            calibration_bands=pd.DataFrame(saved["calibration_bands"]),
            performance=pd.DataFrame(saved["performance"]),
            recommendation=Recommendation(bool(advice["retrain"]), tuple(advice["reasons"])),
        )


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Month):
        return str(value)
    return value


@dataclass(frozen=True)
class _Model:
    """The model in production for a month: its artifact, label, and whether the month was
    one of its own training months (in sample: its calibration there proves little)."""

    artifact: ModelArtifact
    label: str
    trained_as_of: Month


@dataclass(frozen=True)
class ReferenceProfile:
    """The champion's drift reference, binned: per feature and for the score, the reference
    months' histogram (`drift.Histogram`), and mean |SHAP| on a sample of their rows.

    A pure function of the champion, its reference months, the settings that shape it and
    the warehouse files reported by the last of them (point in time: later deliveries
    cannot change it), so it is computed once per champion and kept in
    <home>/cache/monitor/, keyed by all of those (`key`): anything else recomputes it."""

    key: dict[str, Any]
    rows: int
    features: list[drift.Histogram]
    score: drift.Histogram
    mean_abs_shap: np.ndarray

    FORMAT = 1

    @staticmethod
    def _key(settings: Settings, champion: _Model, months: list[Month]) -> dict[str, Any]:
        from doudi.warehouse import fingerprint_through
        from features.registry import code_version

        return {"format": ReferenceProfile.FORMAT, "model": champion.label,
                "feature_code": code_version(),
                "months": [str(m) for m in months], "bins": drift.QUANTILE_BINS,
                "shap_rows": settings.monitor.shap_rows,
                "features": list(champion.artifact.feature_names),
                "warehouse": fingerprint_through(settings.warehouse_dir, months[-1])}

    @staticmethod
    def path(settings: Settings, model_label: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in model_label)
        return settings.cache_dir / "monitor" / f"reference-{safe}.json"

    @classmethod
    def cached(cls, settings: Settings, champion: _Model,
               months: list[Month]) -> ReferenceProfile | None:
        path = cls.path(settings, champion.label)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if data.get("key") != cls._key(settings, champion, months):
            return None
        return cls(key=data["key"], rows=int(data["rows"]),
                   features=[drift.Histogram.from_json(h) for h in data["features"]],
                   score=drift.Histogram.from_json(data["score"]),
                   mean_abs_shap=np.asarray(data["mean_abs_shap"], dtype=np.float64))

    @classmethod
    def build(cls, settings: Settings, champion: _Model, months: list[Month],
              rows: pd.DataFrame) -> ReferenceProfile:
        """From the reference months' rows; kept for the next run (replaced whole)."""
        artifact, threads = champion.artifact, settings.workers
        ref_x = artifact.encode(rows)
        sample = ref_x[drift.sample_rows(len(ref_x), settings.monitor.shap_rows)]
        profile = cls(
            key=cls._key(settings, champion, months), rows=len(ref_x),
            features=drift.histograms(ref_x),
            score=drift.histogram(artifact.raw_margin(rows, num_threads=threads)),
            mean_abs_shap=drift.mean_abs_contributions(
                artifact.contributions(sample, num_threads=threads)))
        path = cls.path(settings, champion.label)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _replace(path, json.dumps({
            "key": profile.key, "rows": profile.rows,
            "features": [h.to_json() for h in profile.features],
            "score": profile.score.to_json(),
            "mean_abs_shap": profile.mean_abs_shap.tolist()}).encode("utf-8"))
        return profile


def run_monitor(settings: Settings, as_of: Month) -> MonitorReport:
    """Drift, calibration, performance and the recommendation for month `as_of`; a
    one-line UserError without a champion, or for a month not delivered yet."""
    from doudi.months import require_not_future
    from features import labelled_table, labels_table
    from features.asof import require_delivered
    from features.tables import first_roster_month

    require_not_future(as_of)
    models = _Models(settings)  # no champion: nothing to monitor, whatever the month
    require_delivered(settings.warehouse_dir, as_of)
    champion = models.champion
    horizon = settings.horizon_months + settings.label_allowance_months
    first = first_roster_month(settings.warehouse_dir)
    reference_months = [m for m in _months_to(champion.trained_as_of - horizon,
                                              settings.monitor.reference_months) if m >= first]
    final_last = as_of - horizon
    window = [m for m in (final_last - settings.monitor.calibration_months + 1).through(as_of)
              if m >= first]
    if not reference_months:
        raise UserError(f"the champion {champion.label} has no training month in the warehouse")

    # Labels of the whole window (a cheap read); features only where nothing else will do:
    # the month itself (drift), the reference unless its profile is cached, and the months
    # whose prediction log is missing or from another model (docs/monitoring.md "Cost").
    labels = labels_table(settings.warehouse_dir, window, settings, known_by=as_of)
    labels = labels[labels["in_scope"].to_numpy()].reset_index(drop=True)
    labels_month = pd.to_datetime(labels["as_of"]).dt.date.to_numpy()
    households = labels["household_key"].astype(str).to_numpy()
    keys_of = {m: households[labels_month == m.end] for m in window}  # in the labels' order
    reference = ReferenceProfile.cached(settings, champion, reference_months)
    margins = _Margins(settings, settings.workers)
    for month in window:
        margins.use_log(month, models.at(month), keys_of[month])
    feature_months = {as_of, *([] if reference else reference_months),
                      *(m for m in window if not margins.logged(m))}
    log.info("monitor %s: features of %s; margins from the prediction log for %s; "
             "reference profile %s", as_of, ", ".join(str(m) for m in sorted(feature_months)),
             ", ".join(str(m) for m in window if margins.logged(m)) or "no month",
             "kept" if reference else "computed")
    table = labelled_table(settings.warehouse_dir, sorted(feature_months), settings,
                           known_by=as_of)
    month_of = pd.to_datetime(table["as_of"]).dt.date.to_numpy()
    now_rows = table[month_of == as_of.end]
    if now_rows.empty:
        raise UserError(f"no in-scope household in the warehouse as of {as_of}")
    margins.use_features(table, month_of)
    if reference is None:
        ref_rows = table[pd.Series(month_of).isin({m.end for m in reference_months}).to_numpy()]
        reference = ReferenceProfile.build(settings, champion, reference_months, ref_rows)

    verdicts, alerts = _store_frames(settings)
    label = _with_verdicts(labels, verdicts)
    feature_table = _drift(champion.artifact, reference, now_rows, settings)
    score_psi = reference.score.psi(margins.of(champion, as_of, keys_of[as_of]))
    labels_zh = {f.name: f.label_zh for f in _features()}
    feature_table.insert(1, "label_zh", [labels_zh.get(n, n) for n in feature_table["feature"]])
    bands, perf = _month_by_month(margins, labels_month, keys_of, label, window, models,
                                 as_of, settings)
    score_band = drift.band(score_psi, settings.monitor.psi_moderate, settings.monitor.psi_major)
    report = MonitorReport(
        as_of=as_of,
        model_version=champion.label,
        reference=(f"{reference_months[0]}..{reference_months[-1]}: {reference.rows:,} "
                   f"household-months, training months of {champion.label} "
                   f"(as of {champion.trained_as_of})"),
        feature_drift=feature_table[FEATURE_DRIFT_COLUMNS],
        score_psi=score_psi,
        score_band=score_band,
        township_alerts=_township_alerts(now_rows, alerts, as_of, settings),
        calibration_bands=bands,
        performance=perf,
        recommendation=Recommendation(False, ()),
    )
    return _with_recommendation(report, champion.trained_as_of, settings)


def _months_to(last: Month, count: int) -> list[Month]:
    return (last - count + 1).through(last)


def _features() -> list[Any]:
    from features import FEATURES

    return list(FEATURES)


class _Models:
    """This workspace's champion and, per month, the model that was in production then:
    the latest version the gate made champion with a training month at or before it
    (the current champion from its own month on, or when no such version exists)."""

    def __init__(self, settings: Settings) -> None:
        from doudi import registry

        self.settings = settings
        ws = registry.workspace(settings)
        client = registry.client(settings.tracking_uri())
        champ = registry.champion(client, ws)
        if champ is None:
            raise UserError(f"{ws.model_name} has no champion yet: nothing to monitor "
                            "(train one: doudi monthly or doudi train)")
        self._name = ws.model_name
        self._cache: dict[str, _Model] = {}
        self.champion = self._load(str(champ.version), _tag_month(champ.tags))
        self._gated = sorted(
            ((month, str(mv.version)) for mv in registry.known_versions(client, ws.model_name)
             if (mv.tags or {}).get("gate_decision") == registry.CHAMPION
             and (month := _tag_month(mv.tags or {})) is not None),
            key=lambda pair: (pair[0], int(pair[1])))

    def _load(self, version: str, trained: Month | None) -> _Model:
        from doudi import registry

        if version not in self._cache:
            uri = registry.ModelRef(self._name, version=version).uri
            artifact, label = registry.load_model(uri, self.settings)
            if trained is None:
                raise UserError(f"{label}: no readable as_of tag; retrain to monitor it")
            self._cache[version] = _Model(artifact, label or uri, trained)
        return self._cache[version]

    def at(self, month: Month) -> _Model:
        if self.champion.trained_as_of <= month:
            return self.champion
        earlier = [(m, v) for m, v in self._gated if m <= month]
        return self._load(earlier[-1][1], earlier[-1][0]) if earlier else self.champion


class _Margins:
    """Each (model, month)'s margins by household: from the month's prediction log when the
    model in production then wrote it and it covers every household, else predicted once
    from the features (the champion's as-of month serves the score's PSI and calibration)."""

    def __init__(self, settings: Settings, threads: int) -> None:
        self._settings, self._threads = settings, threads
        self._found: dict[tuple[str, Month], pd.Series] = {}
        self._table: pd.DataFrame | None = None
        self._month_of: np.ndarray | None = None

    def use_log(self, month: Month, model: _Model, keys: np.ndarray) -> None:
        from serving.predictions import read_predictions

        log = read_predictions(self._settings, month)
        if log is None or len(keys) == 0 or set(log["model_version"]) != {model.label}:
            return
        margin = pd.Series(log["margin"].to_numpy(), index=log["household_key"].astype(str))
        if not margin.index.is_unique or not pd.Index(keys).isin(margin.index).all():
            return  # scored before a late delivery changed the month's scope: predict again
        self._found[(model.label, month)] = margin

    def logged(self, month: Month) -> bool:
        return any(m == month for _, m in self._found)

    def use_features(self, table: pd.DataFrame, month_of: np.ndarray) -> None:
        self._table, self._month_of = table, month_of

    def of(self, model: _Model, month: Month, keys: np.ndarray) -> np.ndarray:
        """Margins of `keys` (households in scope in `month`), in their order."""
        key = (model.label, month)
        if key not in self._found:
            if self._table is None or self._month_of is None:
                raise RuntimeError("margins asked before the features were read")
            rows = self._table[self._month_of == month.end]
            self._found[key] = pd.Series(
                model.artifact.raw_margin(rows, num_threads=self._threads),
                index=rows["household_key"].astype(str).to_numpy())
        found = self._found[key].reindex(keys)
        if found.isna().any():  # labels and features come from the same rules: a bug
            raise RuntimeError(f"{found.isna().sum()} household(s) of {month} without margin")
        return found.to_numpy()


def _tag_month(tags: dict[str, str]) -> Month | None:
    try:
        return Month.parse(tags.get("as_of", ""), what="as_of tag", allow_date=True)
    except UserError:
        return None


def _store_frames(settings: Settings) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(caseworkers' verdicts, every alert) from the alert store."""
    from serving.store import list_alerts, open_store, verdict_labels

    with open_store(settings=settings) as store:
        return verdict_labels(store), list_alerts(store)


def _with_verdicts(table: pd.DataFrame, verdicts: pd.DataFrame) -> np.ndarray:
    """The labels known so far, with a caseworker's confirmed verdict for the household's
    month counted as positive (a dismissal changes nothing: docs/alerts.md)."""
    label = table["label"].to_numpy(dtype=np.int8).copy()
    confirmed = verdicts[verdicts["verdict"] == "confirmed"] if len(verdicts) else verdicts
    if len(confirmed):
        known = pd.MultiIndex.from_arrays([confirmed["household_key"].astype(str),
                                           pd.to_datetime(confirmed["as_of"])])
        rows = pd.MultiIndex.from_arrays([table["household_key"].astype(str),
                                          pd.to_datetime(table["as_of"])])
        label[rows.isin(known)] = 1
    return label


def _drift(artifact: ModelArtifact, reference: ReferenceProfile, now_rows: pd.DataFrame,
           settings: Settings) -> pd.DataFrame:
    """The feature drift table (without label_zh): PSI, missing shares, mean |SHAP|."""
    now_x = artifact.encode(now_rows)
    table = drift.feature_drift(reference.features, now_x, artifact.feature_names,
                                moderate=settings.monitor.psi_moderate,
                                major=settings.monitor.psi_major)
    now_sample = now_x[drift.sample_rows(len(now_x), settings.monitor.shap_rows)]
    table["mean_abs_shap_ref"] = reference.mean_abs_shap
    table["mean_abs_shap_now"] = drift.mean_abs_contributions(
        artifact.contributions(now_sample, num_threads=settings.workers))
    return table


def _month_by_month(margins: _Margins, labels_month: np.ndarray,
                    keys_of: dict[Month, np.ndarray], label: np.ndarray,
                    window: list[Month], models: _Models, as_of: Month, settings: Settings,
                    ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Calibration bands and performance rows for every month of the window (`label` and
    `labels_month` row for row; `keys_of` each month's households in that order)."""
    from serving.capacity import province_capacity

    horizon = settings.horizon_months + settings.label_allowance_months
    bands, perf = [], []
    for month in window:
        rows = labels_month == month.end
        if not rows.any():
            continue
        model = models.at(month)
        risk = model.artifact.calibrator.apply(margins.of(model, month, keys_of[month]))
        y = label[rows]
        final = month + horizon <= as_of
        share = min(1.0, (as_of - month) / horizon)
        in_sample = month + horizon <= model.trained_as_of
        cal = performance.calibration_bands(risk, y)
        cal.insert(1, "month", str(month))
        cal["labels_final"] = final
        cal["model_version"] = model.label
        cal["in_sample"] = in_sample
        bands.append(cal)
        k = province_capacity(len(risk), settings)
        found = [("estimated", performance.estimated_metrics(risk, k))]
        if month < as_of:  # no label can have arrived for the month just scored
            found.append(("realised", performance.realised_metrics(risk, y, k)))
        for kind, metrics in found:
            perf += [(str(month), kind, name, value, share, model.label)
                     for name, value in metrics.items()]
    calibration = pd.concat(bands, ignore_index=True) if bands else pd.DataFrame(
        columns=[*performance.CALIBRATION_COLUMNS, "labels_final", "model_version",
                 "in_sample"])
    return calibration, pd.DataFrame(
        perf, columns=[*performance.PERFORMANCE_COLUMNS, "model_version"])


def _township_alerts(now_rows: pd.DataFrame, alerts: pd.DataFrame, as_of: Month,
                     settings: Settings) -> pd.DataFrame:
    """In-scope households and the month's stored alerts per township, with its name."""
    from features.divisions import division_names
    from serving.capacity import townships_of

    in_scope = pd.Series(townships_of(now_rows["village_code"])).value_counts()
    month_alerts = alerts[pd.to_datetime(alerts["as_of"]).dt.date == as_of.end] if len(
        alerts) else alerts
    counts = month_alerts["township_code"].astype(str).value_counts() if len(
        month_alerts) else pd.Series(dtype="int64")
    codes = sorted(set(in_scope.index) | set(counts.index))
    names = division_names(settings.warehouse_dir, as_of)
    frame = pd.DataFrame({
        "township_code": codes,
        "township_name": [names.get(c, "") for c in codes],
        "in_scope": [int(in_scope.get(c, 0)) for c in codes],
        "alerts": [int(counts.get(c, 0)) for c in codes],
    })
    frame["rate"] = frame["alerts"] / frame["in_scope"].where(frame["in_scope"] > 0)
    return frame[TOWNSHIP_COLUMNS]


def _with_recommendation(report: MonitorReport, champion_month: Month,
                         settings: Settings) -> MonitorReport:
    from dataclasses import replace

    return replace(report, recommendation=recommend(report, champion_month, settings))


def recommend(report: MonitorReport, champion_month: Month, settings: Settings) -> Recommendation:
    """Retrain when any check fails (thresholds: `Settings.monitor`, docs/monitoring.md)."""
    m = settings.monitor
    reasons = []
    if report.score_psi >= m.psi_major:
        reasons.append(f"分数分布显著漂移 score drift: PSI {report.score_psi:.3f} >= {m.psi_major}")
    major = report.feature_drift[report.feature_drift["band"] == "major"]
    if len(major) >= m.max_major_features:
        shown = ", ".join(major.sort_values("psi", ascending=False)["feature"].head(5))
        reasons.append(f"{len(major)} 个特征显著漂移 features in major drift "
                       f"(>= {m.max_major_features}): {shown}")
    band = _latest_final_band(report.calibration_bands)
    if band is not None and not (m.band_ratio_min <= band["ratio"] <= m.band_ratio_max):
        reasons.append(
            f"前5%风险段校准偏离 top-5% band calibration off in {band['month']}: observed "
            f"{band['observed']:.1%} vs predicted {band['predicted']:.1%} "
            f"(ratio {band['ratio']:.2f}, allowed {m.band_ratio_min}-{m.band_ratio_max})")
    drop = _precision_drop(report.performance, band["month"] if band is not None else None,
                           str(report.as_of))
    if drop is not None and drop >= m.precision_drop:
        reasons.append(f"估计精确率下降 estimated precision at capacity fell {drop:.0%} "
                       f"since the latest month with final labels (>= {m.precision_drop:.0%})")
    age = report.as_of - champion_month
    if age >= settings.retrain_every_months:
        reasons.append(f"模型已 {age} 个月未更新 champion trained {age} month(s) before "
                       f"{report.as_of} (retrain every {settings.retrain_every_months})")
    return Recommendation(bool(reasons), tuple(reasons))


def _latest_final_band(bands: pd.DataFrame) -> dict[str, Any] | None:
    """The checked band of the latest month with final labels, out of sample."""
    if bands.empty:
        return None
    chosen = bands[(bands["band"] == BAND_CHECKED) & bands["labels_final"]
                   & ~bands["in_sample"].astype(bool) & bands["ratio"].notna()]
    return None if chosen.empty else dict(chosen.iloc[-1])


def _precision_drop(perf: pd.DataFrame, base_month: str | None, month: str) -> float | None:
    """Relative fall of estimated precision at capacity from `base_month` to `month`."""
    if base_month is None or perf.empty:
        return None
    estimated = perf[(perf["kind"] == "estimated")
                     & (perf["metric"] == "precision_at_capacity")].set_index("month")["value"]
    if base_month not in estimated.index or month not in estimated.index:
        return None
    base = float(estimated[base_month])
    return (base - float(estimated[month])) / base if base > 0 else None


# -- results ----------------------------------------------------------------------------------
def monitor_month(settings: Settings, as_of: Month) -> tuple[MonitorReport, tuple[Path, Path]]:
    """`run_monitor`, its files written (`write_report`) and logged (`log_to_mlflow`):
    what `doudi monitor` and `doudi monthly` do."""
    report = run_monitor(settings, as_of)
    files = write_report(report, settings)
    log_to_mlflow(report, settings, files)
    return report, files


def report_paths(settings: Settings, as_of: Month) -> tuple[Path, Path]:
    """<home>/reports/monitor-<YYYY-MM>.json and its feature drift CSV."""
    stem = settings.reports_dir / f"monitor-{as_of}"
    return stem.with_suffix(".json"), Path(f"{stem}-features.csv")


def write_report(report: MonitorReport, settings: Settings) -> tuple[Path, Path]:
    """The JSON and the feature drift CSV (UTF-8 with BOM: opens in Excel), replaced whole."""
    json_path, csv_path = report_paths(settings, report.as_of)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report.to_json(), ensure_ascii=False, indent=1)
    _replace(json_path, text.encode("utf-8"))
    _replace(csv_path, report.feature_drift.to_csv(index=False).encode("utf-8-sig"))
    return json_path, csv_path


def _replace(path: Path, data: bytes) -> None:
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")  # two runs never share one
    partial.write_bytes(data)
    partial.replace(path)


def experiment_name(settings: Settings) -> str:
    from doudi import registry

    return f"doudi-monitor-{registry.workspace(settings).short}"


def log_to_mlflow(report: MonitorReport, settings: Settings, files: tuple[Path, ...]) -> str:
    """One run in `doudi-monitor-<workspace>` named monitor-<YYYY-MM>: headline metrics,
    the recommendation as tags, `files` as artifacts. Returns the run id."""
    from doudi import registry

    client = registry.client(settings.tracking_uri())
    name = experiment_name(settings)
    found = client.get_experiment_by_name(name)
    experiment = found.experiment_id if found is not None else client.create_experiment(
        name, artifact_location=settings.artifact_root())
    run = client.create_run(experiment, run_name=f"monitor-{report.as_of}", tags={
        "as_of": str(report.as_of), "model_version": report.model_version,
        "retrain": str(report.recommendation.retrain).lower(),
        "recommendation": report.recommendation.line()[:4900]})
    run_id = run.info.run_id
    try:
        metrics = {"score_psi": report.score_psi,
                   "features_major": float((report.feature_drift["band"] == "major").sum()),
                   "features_moderate": float(
                       (report.feature_drift["band"] == "moderate").sum()),
                   "max_feature_psi": float(report.feature_drift["psi"].max())}
        latest = report.performance[report.performance["month"] == str(report.as_of)]
        for _, row in latest.iterrows():
            metrics[f"{row['kind']}_{row['metric']}"] = float(row["value"])
        for key, value in metrics.items():
            if math.isfinite(value):
                client.log_metric(run_id, key, value)
        for path in files:
            client.log_artifact(run_id, str(path))
    except Exception:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return run_id
