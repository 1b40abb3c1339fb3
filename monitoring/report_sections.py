"""The report's sections from `ReportData`: alerts, verdict returns, model, fairness, reasons
and the model card (drift: `monitoring.report_drift`). Each returns HTML; every value
shown is escaped by `monitoring.report_html`."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from doudi.contract import RISK_TYPES
from features.registry import FEATURES
from monitoring.report_data import ReportData
from monitoring.report_html import (
    Column,
    figure,
    heading,
    label,
    markdown,
    number,
    paragraph,
    percent,
    ratio,
    table,
)
from serving.work_order import TIER_ZH

TIERS = ("red", "orange", "yellow")
TIER_COLOURS = {"red": "#d64545", "orange": "#f0a23b", "yellow": "#f5d547"}
# Fairness attributes (training.fairness groups) in Chinese.
ATTRIBUTE_ZH = {
    "county_code": "县",
    "group_head_ethnic_minority": "户主少数民族",
    "group_head_elderly": "户主老年",
    "group_disabled_member": "有残疾成员",
    "group_former_poor": "脱贫户",
    "group_relocated": "易地搬迁",
}
DISPARITIES = ("flag_rate_disparity", "precision_disparity", "recall_disparity",
               "fpr_disparity", "fnr_disparity")
# The sections' titles (Chinese, English) by anchor, in reading order: bench/check_report.py
# and the tests look for them in the rendered page.
TITLES = {
    "alerts": ("一、预警数量：等级、类型、乡镇", "Alerts by tier, type and township"),
    "returns": ("二、核查回收与属实率", "Verdict returns and confirmation rates"),
    "model": ("三、模型指标与校准", "Model metrics and calibration"),
    "fairness": ("四、公平性", "Fairness by group"),
    "drift": ("五、漂移监测", "Drift and performance while labels mature"),
    "reasons": ("六、主要预警原因", "Top reasons"),
    "card": ("七、模型卡", "Model card"),
}
# Height of one category row in horizontal charts (pixels): long Chinese names stay legible.
ROW_PX = 22


@dataclass(frozen=True)
class Section:
    """One section: its anchor, Chinese and English titles and its HTML."""

    anchor: str
    zh: str
    en: str
    body: str

    @classmethod
    def of(cls, anchor: str, body: str) -> Section:
        zh, en = TITLES[anchor]
        return cls(anchor, zh, en, body)

    def html(self) -> str:
        return heading(self.zh, self.en, anchor=self.anchor) + self.body


def _type_zh(code: str) -> str:
    return RISK_TYPES.get(code, code) if code else "未标类型"


def alert_section(data: ReportData) -> Section:
    """1. Alert counts by tier, type and township: a table and two charts."""
    counts = data.alert_counts
    by_tier_type = counts.pivot_table(index="risk_type", columns="tier", values="alerts",
                                      aggfunc="sum", fill_value=0)
    by_town = counts.pivot_table(index="township_code", columns="risk_type", values="alerts",
                                 aggfunc="sum", fill_value=0)
    towns = _township_table(data)
    import plotly.graph_objects as go

    tiers = [t for t in TIERS if t in by_tier_type.columns]
    bars = go.Figure([
        go.Bar(name=label(TIER_ZH.get(t, t)), x=[label(_type_zh(k)) for k in by_tier_type.index],
               y=by_tier_type[t].tolist(), marker_color=TIER_COLOURS[t]) for t in tiers])
    bars.update_layout(barmode="stack", height=380,
                       title="预警类型与等级 Alerts by hardship type and tier",
                       yaxis_title="预警数 alerts")
    order = towns.sort_values("total", ascending=True)["township_code"].tolist()
    heat = by_town.reindex(order)
    heat_fig = go.Figure(go.Heatmap(
        z=heat.to_numpy(), x=[label(_type_zh(k)) for k in heat.columns],
        y=[label(n) for n in data.township_labels(list(heat.index))], colorscale="OrRd",
        hovertemplate="%{y} · %{x}: %{z}<extra></extra>", colorbar={"title": "预警数"}))
    heat_fig.update_layout(height=max(360, 120 + ROW_PX * len(heat)),
                           title="各乡镇预警类型 Alerts by township and type",
                           margin={"l": 160})
    columns = [Column("township", "乡镇", "township"), Column("township_code", "代码", "code"),
               *[Column(t, TIER_ZH.get(t, t), t, number) for t in tiers],
               Column("total", "合计", "total", number),
               Column("top_types", "主要类型", "main types")]
    body = "".join([
        paragraph(f"{data.as_of} 共 {data.alerts_total:,} 条预警（每户一条）。一户可有多个类型，"
                  "故按类型计数之和可大于预警数。 One alert per household; an alert with "
                  "several types counts once under each."),
        figure(bars), figure(heat_fig),
        heading("各乡镇预警", "Alerts per township", level=3),
        table(towns, columns, scroll=True),
    ])
    return Section.of("alerts", body)


def _township_table(data: ReportData) -> pd.DataFrame:
    """Per township: alerts per tier (each alert once) and its two most frequent types."""
    counts = data.alert_counts
    tiers = data.tier_alerts.pivot_table(index="township_code", columns="tier",
                                         values="alerts", aggfunc="sum", fill_value=0)
    frame = tiers.reset_index()
    frame["total"] = tiers.sum(axis=1).to_numpy()
    frame["township"] = [data.township_name(c) for c in frame["township_code"]]
    top = (counts.groupby(["township_code", "risk_type"])["alerts"].sum().reset_index()
           .sort_values(["township_code", "alerts"], ascending=[True, False]))
    main = top.groupby("township_code")["risk_type"].apply(
        lambda kinds: "、".join(_type_zh(k) for k in kinds.head(2)))
    frame["top_types"] = frame["township_code"].map(main).fillna("")
    return frame.sort_values(["total", "township_code"], ascending=[False, True],
                             ignore_index=True)


def returns_section(data: ReportData) -> Section:
    """2. Verdict returns and confirmation rates: the month per township, and by month."""
    import plotly.graph_objects as go

    months = data.returns_by_month
    fig = go.Figure([
        go.Bar(name="已下发 sent", x=months["month"], y=months["sent"], marker_color="#9fb3c8"),
        go.Bar(name="已核查 visited", x=months["month"], y=months["visited"],
               marker_color="#2680c2"),
        go.Bar(name="属实 confirmed", x=months["month"], y=months["confirmed"],
               marker_color="#d64545"),
        go.Bar(name="逾期未回 overdue", x=months["month"], y=months["overdue"],
               marker_color="#f0a23b"),
    ])
    fig.update_layout(barmode="group", height=360, yaxis_title="户数 households",
                      xaxis={"type": "category"},
                      title="按预警月份的核查回收 Returns by alert month")
    month_rows = months.assign(
        return_rate=_rate(months["visited"], months["sent"]),
        confirm_rate=_rate(months["confirmed"], months["visited"]))
    town = data.returns.assign(
        township=[data.township_name(c) for c in data.returns["township_code"]],
        return_rate=_rate(data.returns["visited"], data.returns["sent"]),
        confirm_rate=_rate(data.returns["confirmed"], data.returns["visited"]))
    counted = [Column("sent", "已下发", "sent", number),
               Column("visited", "已核查", "visited", number),
               Column("confirmed", "属实", "confirmed", number),
               Column("dismissed", "不属实", "dismissed", number),
               Column("overdue", "逾期", "overdue", number),
               Column("return_rate", "回收率", "returned", percent),
               Column("confirm_rate", "属实率", "confirmed / visited", percent)]
    parts = [
        paragraph("回收率 = 已核查 / 已下发；属实率 = 属实 / 已核查。逾期：已下发、无核查结论且"
                  f"超过反馈期限（截至 {data.today.isoformat()}）。 Returned = visited / sent; "
                  "confirmation rate = confirmed / visited (visited households only: "
                  "selective labels)."),
        figure(fig),
        table(month_rows, [Column("month", "预警月份", "alert month"), *counted]),
        heading(f"{data.as_of} 各乡镇", "Per township", level=3),
    ]
    if town.empty:
        parts.append(paragraph(f"{data.as_of} 的预警尚未下发。 "
                               "No sheet of this month was sent yet."))
    else:
        parts.append(table(town, [Column("township", "乡镇", "township"),
                                  Column("township_code", "代码", "code"), *counted], scroll=True))
    return Section.of("returns", "".join(parts))


def _rate(num: pd.Series, den: pd.Series) -> pd.Series:
    return num.astype(float).div(den.where(den > 0))


METRICS = (
    ("roc_auc", "ROC-AUC", ratio), ("pr_auc", "PR-AUC", ratio),
    ("precision_at_k", "容量内精确率 precision at capacity", percent),
    ("recall_at_k", "容量内召回率 recall at capacity", percent),
    ("brier", "Brier", lambda v: number(v, 4)), ("ece", "ECE", lambda v: number(v, 4)),
    ("calibration_slope", "校准斜率 calibration slope", ratio),
)


def model_section(data: ReportData, calibration_bands: str = "") -> Section:
    """3. The champion's test-block metrics against the baselines, folds, calibration."""
    import plotly.graph_objects as go

    run = data.champion
    prefixes = ["test", *sorted(k.removesuffix("_roc_auc") for k in run.metrics
                                if k.startswith("baseline_") and k.endswith("_roc_auc"))]
    rows = [{"metric": name, **{p: fmt(run.metrics[f"{p}_{key}"]) if f"{p}_{key}" in run.metrics
                                else "" for p in prefixes}} for key, name, fmt in METRICS]
    metrics = pd.DataFrame(rows)
    parts = [paragraph(f"冠军模型 champion {run.label}，训练截至 trained as of "
                       f"{run.trained_as_of}；样本外测试期 out-of-time test block, "
                       f"n = {number(run.metrics.get('test_n'))}, "
                       f"positives = {number(run.metrics.get('test_positives'))}."),
             table(metrics, [Column("metric", "指标", "metric"),
                             *[Column(p, "本模型" if p == "test" else "基线",
                                      "champion" if p == "test" else p.removeprefix("baseline_"))
                               for p in prefixes]])]
    if run.fold_metrics is not None and not run.fold_metrics.empty:
        folds = run.fold_metrics
        fig = go.Figure([
            go.Scatter(name=label(scorer), x=part["fold"], y=part["roc_auc"], mode="lines+markers")
            for scorer, part in folds.groupby("scorer")])
        fig.update_layout(height=340, title="时间交叉验证各折 ROC-AUC by temporal fold",
                          xaxis_title="折 fold", yaxis_title="ROC-AUC", xaxis={"dtick": 1})
        parts.append(figure(fig))
    curve = run.calibration_curve
    if curve is not None and not curve.empty:
        top = float(max(curve["mean_predicted"].max(), curve["observed_rate"].max()))
        fig = go.Figure([
            go.Scatter(name="完美校准 perfect", x=[0, top], y=[0, top], mode="lines",
                       line={"dash": "dash", "color": "#9aa5b1"}),
            go.Scatter(name="模型 model", x=curve["mean_predicted"], y=curve["observed_rate"],
                       mode="lines+markers", text=[f"n={int(n)}" for n in curve["n"]]),
        ])
        fig.update_layout(height=420, title="校准可靠性曲线（测试期）Reliability (test block)",
                          xaxis_title="预测风险 predicted", yaxis_title="实际比例 observed")
        parts.append(figure(fig))
    parts.append(calibration_bands)
    return Section.of("model", "".join(parts))


def fairness_section(data: ReportData) -> Section:
    """4. The champion run's fairness table: per group, rates and disparities (cells
    outside [tau, 1/tau] flagged as training flagged them)."""
    frame = data.champion.fairness
    if frame is None or frame.empty:
        return Section.of("fairness", paragraph(
            "冠军模型的运行没有公平性表。 The champion's run logged no fairness table."))
    shown = frame.assign(
        attribute_zh=[ATTRIBUTE_ZH.get(a, a) for a in frame["attribute"]],
        group_zh=[_group_zh(data, a, g) for a, g in zip(frame["attribute"], frame["group"],
                                                         strict=True)])

    def flagged(row: pd.Series, column: str) -> bool:
        flag = column.replace("_disparity", "_flag")
        return column in DISPARITIES and bool(row.get(flag) is True or row.get(flag) == "True")

    columns = [Column("attribute_zh", "分组", "attribute"), Column("group_zh", "组", "group"),
               Column("n", "人数", "n", number), Column("positives", "阳性", "positives", number),
               Column("flag_rate", "预警率", "flag rate", percent),
               Column("precision", "精确率", "precision", percent),
               Column("recall", "召回率", "recall", percent),
               *[Column(d, "差异比 " + d.split("_disparity")[0], "disparity", ratio)
                 for d in DISPARITIES if d in frame.columns]]
    warnings = "".join(f"<li>{label(w)}</li>" for w in data.champion.fairness_warnings)
    body = "".join([
        paragraph("差异比 = 该组指标 / 参照组指标；红色单元格超出训练时设定的 [tau, 1/tau] 范围"
                  "（默认 tau = 0.8）。 Disparity = group / reference group; highlighted cells "
                  "lie outside [tau, 1/tau] as training flagged them (Aequitas)."),
        table(shown, columns, flagged=flagged, scroll=True),
        f"<ul class=\"note\">{warnings}</ul>" if warnings else "",
    ])
    return Section.of("fairness", body)


def _group_zh(data: ReportData, attribute: str, group: object) -> str:
    """A fairness group as a reader names it: the county's name, 是/否, 缺失."""
    text = str(group)
    if attribute == "county_code":
        return data.township_names.get(text, text)
    return {"1.0": "是 yes", "1": "是 yes", "True": "是 yes", "0.0": "否 no", "0": "否 no",
            "False": "否 no", "missing": "缺失 missing"}.get(text, text)


def _group_labels() -> dict[str, str]:
    """Reason group -> the Chinese labels of its first features (the group's meaning)."""
    labels: dict[str, list[str]] = {}
    for spec in FEATURES:
        labels.setdefault(spec.group, [])
        if len(labels[spec.group]) < 2:
            labels[spec.group].append(spec.label_zh)
    return {group: "、".join(names) for group, names in labels.items()}


def reasons_section(data: ReportData, top: int = 15) -> Section:
    """6. The month's most frequent reasons (feature groups) on stored alerts."""
    import plotly.graph_objects as go

    reasons = data.reasons.head(top).copy()
    names = _group_labels()
    reasons["label_zh"] = [names.get(g, g) for g in reasons["group_key"]]
    reasons["share"] = reasons["alerts"] / max(data.alerts_total, 1)
    fig = go.Figure(go.Bar(
        x=reasons["alerts"][::-1], orientation="h",
        y=[label(f"{z} ({g})") for z, g in zip(reasons["label_zh"][::-1],
                                               reasons["group_key"][::-1], strict=True)],
        marker_color="#2680c2", hovertemplate="%{y}: %{x}<extra></extra>"))
    fig.update_layout(height=max(320, 120 + ROW_PX * len(reasons)), margin={"l": 330},
                      title="最常见的预警原因 Most frequent reasons", xaxis_title="预警数 alerts")
    body = "".join([
        paragraph("每条预警最多列出若干原因（按风险贡献排序）；此处统计各原因组出现在多少条"
                  "预警中。 "
                  "How many of the month's alerts show each reason group."),
        figure(fig),
        table(reasons, [Column("label_zh", "原因", "reason"), Column("group_key", "组", "group"),
                        Column("alerts", "预警数", "alerts", number),
                        Column("share", "占预警", "share of alerts", percent),
                        Column("mean_points", "平均贡献（百分点）", "mean points",
                               lambda v: number(v, 1))]),
    ])
    return Section.of("reasons", body)


def model_card_section(data: ReportData) -> Section:
    """7. The champion run's model card (markdown, raw HTML shown as text)."""
    text = data.champion.model_card
    body = (f'<div class="card">{markdown(text)}</div>' if text.strip()
            else paragraph("冠军模型的运行没有模型卡。 The champion's run has no model card."))
    return Section.of("card", body)
