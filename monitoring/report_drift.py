"""The report's drift section and calibration-by-band table, from `monitoring.monitor`'s
`MonitorReport` (the same numbers `doudi monitor` writes)."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from monitoring.monitor import MonitorReport
from monitoring.report_html import Column, figure, label, number, paragraph, percent, ratio, table
from monitoring.report_sections import ROW_PX, Section

BAND_COLOURS = {"stable": "#3ebd93", "moderate": "#f0a23b", "major": "#d64545"}
BAND_ZH = {"stable": "稳定", "moderate": "中度漂移", "major": "显著漂移"}
# Features shown in the drift chart and table: the most drifted.
TOP_FEATURES = 20
METRIC_ZH = {"precision_at_capacity": "容量内精确率 precision at capacity",
             "recall_at_capacity": "容量内召回率 recall at capacity",
             "roc_auc": "ROC-AUC"}


def calibration_bands_html(monitor: MonitorReport | None) -> str:
    """Calibration by risk band (top 1%, 5%, 10%, all) per month: predicted vs observed."""
    from monitoring.report_html import heading

    title = heading("按风险段校准", "Calibration by risk band", level=3)
    if monitor is None or monitor.calibration_bands.empty:
        return title + paragraph("暂无按风险段的校准结果。 No calibration by band yet.")
    bands = monitor.calibration_bands.assign(
        final=lambda f: ["已定 final" if v else "未定 maturing" for v in f["labels_final"]])
    return title + "".join([
        paragraph("预测 = 该段平均预测风险；实际 = 已到达的标签与核查结论；比值 = 预测 / 实际。"
                  "标签在 6 + 3 个月后才最终确定。 Predicted / observed per band; labels are final "
                  "6 + 3 months later."),
        table(bands, [Column("month", "月份", "month"), Column("band", "风险段", "band"),
                      Column("n", "户数", "n", number),
                      Column("predicted", "预测", "predicted", percent),
                      Column("observed", "实际", "observed", percent),
                      Column("ratio", "比值", "ratio", ratio),
                      Column("final", "标签", "labels")], scroll=True),
    ])


def drift_section(monitor: MonitorReport | None, failure: str = "",
                  township_labels: Callable[[list[str]], list[str]] = list) -> Section:
    """5. Score and feature drift (PSI), township alert rates, performance over months and
    the retrain recommendation."""
    if monitor is None:
        return Section.of("drift",
                          paragraph(f"漂移监测未能运行 the monitor could not run: {failure}"))
    import plotly.graph_objects as go

    rec = monitor.recommendation
    verdict = "建议重新训练 retrain now" if rec.retrain else "暂不需要重新训练 no retraining needed"
    reasons = "".join(f"<li>{label(r)}</li>" for r in rec.reasons)
    drift = monitor.feature_drift.sort_values("psi", ascending=False).head(TOP_FEATURES)
    fig = go.Figure(go.Bar(
        x=drift["psi"][::-1], orientation="h",
        y=[label(f"{z} ({f})") for z, f in zip(drift["label_zh"][::-1], drift["feature"][::-1],
                                               strict=True)],
        marker_color=[BAND_COLOURS.get(b, "#9aa5b1") for b in drift["band"][::-1]],
        hovertemplate="%{y}: PSI %{x:.3f}<extra></extra>"))
    for threshold in (0.1, 0.25):
        fig.add_vline(x=threshold, line_dash="dash", line_color="#9aa5b1")
    fig.update_layout(height=max(320, 120 + ROW_PX * len(drift)), margin={"l": 360},
                      title=f"漂移最大的 {len(drift)} 个特征 Most drifted features (PSI)",
                      xaxis_title="PSI")
    parts = [
        f'<div class="kpis"><div class="kpi{" alarm" if rec.retrain else ""}">'
        f"<span>建议 recommendation</span><b>{label(verdict)}</b></div>"
        f'<div class="kpi"><span>分数 PSI score</span><b>{number(monitor.score_psi, 3)}</b>'
        f"{label(BAND_ZH.get(monitor.score_band, monitor.score_band))}</div></div>",
        f'<ul class="note">{reasons}</ul>' if reasons else "",
        paragraph(f"参照期 reference: {monitor.reference}. PSI < 0.1 稳定 stable, 0.1–0.25 中度 "
                  "moderate, ≥ 0.25 显著 major."),
        figure(fig),
        table(drift.assign(band_zh=[BAND_ZH.get(b, b) for b in drift["band"]]), [
            Column("label_zh", "特征", "feature"), Column("feature", "名称", "name"),
            Column("psi", "PSI", "PSI", lambda v: number(v, 3)),
            Column("band_zh", "判断", "band"),
            Column("missing_ref", "参照期缺失", "missing (ref)", percent),
            Column("missing_now", "本月缺失", "missing (now)", percent),
            Column("mean_abs_shap_ref", "参照期平均|SHAP|", "mean |SHAP| ref",
                   lambda v: number(v, 3)),
            Column("mean_abs_shap_now", "本月平均|SHAP|", "mean |SHAP| now",
                   lambda v: number(v, 3))], scroll=True),
        _performance_figure(monitor.performance),
        _township_rates(monitor.township_alerts, township_labels),
    ]
    return Section.of("drift", "".join(parts))


def _performance_figure(perf: pd.DataFrame) -> str:
    """Estimated (from calibrated scores) and realised performance, over months."""
    import plotly.graph_objects as go

    shown = perf[perf["metric"].isin(list(METRIC_ZH))]
    if shown.empty:
        return ""
    fig = go.Figure([
        go.Scatter(name=label(f"{METRIC_ZH[metric]} · {'估计' if kind == 'estimated' else '实际'} "
                              f"{kind}"),
                   x=part["month"], y=part["value"], mode="lines+markers",
                   line={"dash": "dot" if kind == "estimated" else "solid"})
        for (metric, kind), part in shown.groupby(["metric", "kind"])
        if isinstance(metric, str)])
    fig.update_layout(height=420, title="标签成熟期间的模型表现 Performance while labels mature",
                      yaxis_title="值 value", legend={"orientation": "h", "y": -0.25})
    return figure(fig)


def _township_rates(towns: pd.DataFrame,
                    township_labels: Callable[[list[str]], list[str]]) -> str:
    """Alert rate per township (alerts / in-scope households)."""
    import plotly.graph_objects as go

    if towns.empty:
        return ""
    ordered = towns.sort_values("rate", ascending=True)
    names = [label(n) for n in township_labels([str(c) for c in ordered["township_code"]])]
    fig = go.Figure(go.Bar(x=ordered["rate"], y=names, orientation="h", marker_color="#2680c2",
                           hovertemplate="%{y}: %{x:.1%}<extra></extra>"))
    fig.update_layout(height=max(320, 120 + ROW_PX * len(ordered)), margin={"l": 160},
                      title="各乡镇预警率 Alert rate per township", xaxis_tickformat=".0%")
    return figure(fig)
