"""Alert explanations: TreeSHAP contributions grouped into reasons a caseworker reads.

1. Contributions come from the artifact (LightGBM `pred_contrib`, exact TreeSHAP on
   the raw margin = log-odds scale; the last column is the bias). Per row they sum to
   the raw margin.
2. Features are grouped by the registry's `group` (windows of one signal, member
   counts, one-hot levels...): a group's contribution is the plain sum of its
   members' contributions, so the groups plus the bias still sum to the margin.
3. At most `max_reasons` groups that push the risk UP are kept, strongest first.
4. Each reason is a Chinese sentence built from the registry's `template_zh` with
   the household's own values (the one or two members of the group that push
   hardest), a comparison with the county median at T for numeric values, and
   the group's size in probability points: the household's risk above that of the
   model's average household (the bias), shared among the groups in proportion to
   their log-odds contributions. These points add up: over all groups they sum to
   risk - base risk. (Leave-one-group-out differences do not add up and, through a
   step-shaped isotonic calibrator, gave tied sizes for 90% of the alerts: measured.)
   Where the risk is not above the base risk, sizes are stated in log-odds.

Texts come only from the registry; serving adds generic connecting words.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from doudi.errors import UserError
from doudi.model_artifact import ModelArtifact
from features.registry import BY_NAME, FeatureDefinition

PROBABILITY_POINTS = "probability points"
LOG_ODDS = "log-odds"
# Below this many points of risk above the base, a row's sizes are stated in log-odds.
MIN_POINTS_ABOVE_BASE = 0.05
# Groups whose value is the same for every household of an area: no county comparison.
_NO_COMPARISON_DTYPES = ("bool",)
_UNIT_TEXT = re.compile(r"^\s*([\u4e00-\u9fff]+)")
# A group must raise the log-odds by at least this much to be shown as a reason:
# smaller pushes are noise a caseworker cannot act on.
MIN_REASON_MARGIN = 0.01


@dataclass(frozen=True)
class ExplainedReason:
    """One reason: group, Chinese text, size in probability points and in log-odds."""

    rank: int
    group_key: str
    text_zh: str
    contribution: float  # size on `scale`: probability points of risk, or log-odds
    margin: float  # log-odds (raw margin) contribution of the group
    scale: str = PROBABILITY_POINTS


def _value_format(template: str) -> tuple[str, str]:
    """The format spec of `{value}` in a template and the unit word that follows it."""
    parts = list(string.Formatter().parse(template))
    for i, (_literal, field, spec, _conv) in enumerate(parts):
        if field == "value":
            following = parts[i + 1][0] if i + 1 < len(parts) else ""
            unit = _UNIT_TEXT.match(following)
            return spec or "", unit.group(1) if unit else ""
    return "", ""


class Explainer:
    """Groups contributions and writes reasons for one artifact and one registry."""

    def __init__(
        self,
        artifact: ModelArtifact,
        registry: Mapping[str, FeatureDefinition] | None = None,
        max_reasons: int = 4,
    ) -> None:
        registry = BY_NAME if registry is None else registry
        names = artifact.feature_names
        unknown = [n for n in names if n not in registry]
        if unknown:
            raise UserError(
                f"the model uses {len(unknown)} feature(s) the registry does not describe "
                f"(no explanation text): {', '.join(unknown[:10])}")
        self.artifact = artifact
        self.specs: tuple[FeatureDefinition, ...] = tuple(registry[n] for n in names)
        self.max_reasons = max_reasons
        self.groups: tuple[str, ...] = tuple(dict.fromkeys(s.group for s in self.specs))
        index = {g: i for i, g in enumerate(self.groups)}
        self.group_of = np.array([index[s.group] for s in self.specs], dtype=np.int64)
        # Columns ordered by group so one reduceat sums every group's members.
        self._order = np.argsort(self.group_of, kind="stable")
        self._starts = np.searchsorted(self.group_of[self._order], np.arange(len(self.groups)))
        self._members: list[list[int]] = [
            np.flatnonzero(self.group_of == g).tolist() for g in range(len(self.groups))]
        self._formats = [_value_format(s.template_zh) for s in self.specs]
        self._categorical = [
            f.levels if f.kind == "categorical" else () for f in artifact.features]

    # -- numbers ---------------------------------------------------------------
    def contributions(self, X: np.ndarray | pd.DataFrame, num_threads: int = 1) -> np.ndarray:
        """(n, features + 1) margin contributions; the last column is the bias."""
        return self.artifact.contributions(X, num_threads=num_threads)

    def group_contributions(self, contributions: np.ndarray) -> np.ndarray:
        """(n, groups): each group's summed member contributions (bias excluded)."""
        features = np.asarray(contributions)[:, : len(self.specs)]
        return np.add.reduceat(features[:, self._order], self._starts, axis=1)

    def members(self, group: str) -> list[str]:
        g = self.groups.index(group)
        return [s.name for s, k in zip(self.specs, self.group_of, strict=True) if k == g]

    # -- reasons -----------------------------------------------------------------
    def explain(
        self,
        X: np.ndarray | pd.DataFrame,
        *,
        reference: np.ndarray | None = None,
        num_threads: int = 1,
    ) -> list[list[ExplainedReason]]:
        """Up to `max_reasons` risk-raising reasons per row of X.

        `reference`: (n, features) comparison values per row (e.g. the county median at
        T, see `county_medians`); NaN or None means no comparison.
        """
        values = self.artifact.encode(X)
        contrib = self.contributions(values, num_threads=num_threads)
        return self.reasons_from(values, contrib, reference=reference)

    def reasons_from(
        self, values: np.ndarray, contrib: np.ndarray, *, reference: np.ndarray | None = None,
    ) -> list[list[ExplainedReason]]:
        """Reasons from already computed contributions (values: encoded feature matrix)."""
        n = len(values)
        if n == 0:
            return []
        grouped = self.group_contributions(contrib)
        k = min(self.max_reasons, grouped.shape[1])
        # Strongest risk-raising groups first; ties broken by group order (stable).
        top = np.argsort(-grouped, axis=1, kind="stable")[:, :k]
        top_margin = np.take_along_axis(grouped, top, axis=1)
        points_per_logodds = self.points_per_logodds(contrib)
        in_points = np.isfinite(points_per_logodds)
        points = top_margin * np.where(in_points, points_per_logodds, 0.0)[:, None]
        # Per-row work below is plain Python on lists: numpy calls on 2-20 element
        # slices cost more than they save (this loop runs for every alert).
        top_l, top_margin_l, points_l = top.tolist(), top_margin.tolist(), points.tolist()
        in_points_l = in_points.tolist()
        out: list[list[ExplainedReason]] = []
        for i in range(n):
            row: list[ExplainedReason] = []
            if top_margin_l[i][0] < MIN_REASON_MARGIN:
                out.append(row)
                continue
            vals, cons = values[i].tolist(), contrib[i].tolist()
            ref = None if reference is None else reference[i].tolist()
            scale = PROBABILITY_POINTS if in_points_l[i] else LOG_ODDS
            for j in range(k):
                m = top_margin_l[i][j]
                if m < MIN_REASON_MARGIN:
                    break
                g = top_l[i][j]
                size = points_l[i][j] if scale == PROBABILITY_POINTS else m
                text = self._sentence(g, vals, cons, ref) + _scale_text(size, scale)
                row.append(ExplainedReason(len(row) + 1, self.groups[g], text, size, m, scale))
            out.append(row)
        return out

    def points_per_logodds(self, contrib: np.ndarray) -> np.ndarray:
        """Per row: probability points of risk per unit of log-odds contribution.

        100 x (risk - base risk) / (margin - bias), where the bias is the model's average
        margin; NaN where the risk is not at least MIN_POINTS_ABOVE_BASE points above
        the base risk (sizes are then stated in log-odds).
        """
        contrib = np.asarray(contrib)
        margin = contrib.sum(axis=1)
        bias = contrib[:, -1]
        calibrate = self.artifact.calibrator.apply
        above_points = (calibrate(margin) - calibrate(bias)) * 100.0
        above_logodds = margin - bias
        ok = (above_points >= MIN_POINTS_ABOVE_BASE) & (above_logodds > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(ok, above_points / above_logodds, np.nan)

    def _sentence(self, g: int, values: list[float], contrib: list[float],
                  reference: list[float] | None) -> str:
        members = self._members[g]
        pushing = sorted(members, key=lambda j: -contrib[j]) if len(members) > 1 else members
        pushing = [j for j in pushing if contrib[j] > 0] or pushing[:1]
        # Lead with members whose value is present (a 0 flag or NaN rarely reads well).
        present = [j for j in pushing if self._present(values[j])]
        chosen = (present or pushing)[:2]
        parts = [self._member_text(j, values[j], None if reference is None else reference[j])
                 for j in chosen]
        return "，".join(parts)

    @staticmethod
    def _present(value: float) -> bool:
        """A value worth quoting first: recorded and not zero (no event, flag off)."""
        return not math.isnan(value) and value != 0

    def _member_text(self, j: int, value: float, reference: float | None) -> str:
        spec = self.specs[j]
        if math.isnan(value):
            return f"{spec.label_zh}：无记录"
        if self._categorical[j]:
            levels = self._categorical[j]
            return f"{spec.label_zh}：{levels[int(value)] if 0 <= value < len(levels) else '其他'}"
        if spec.dtype == "bool" and value == 0:
            return f"{spec.label_zh}：否"
        text = spec.explain(value)
        if (reference is not None and not math.isnan(reference) and reference != value
                and spec.dtype not in _NO_COMPARISON_DTYPES and "{value" in spec.template_zh):
            fmt, unit = self._formats[j]
            text += f"（本县中位数 {format(reference, fmt)}{(' ' + unit) if unit else ''}）"
        return text


def _scale_text(size: float, scale: str) -> str:
    """The size of a reason, labelled with its scale (one scale per household)."""
    if scale == LOG_ODDS:
        return f"〔对数几率 {size:+.2f}〕"
    if size < 0.05:
        return "〔风险 +<0.1 个百分点〕"
    return f"〔风险 {size:+.1f} 个百分点〕"


def county_medians(
    frame: pd.DataFrame, feature_names: Sequence[str], county_column: str = "county_code",
) -> pd.DataFrame:
    """Median of each feature per county among the frame's households (known at T)."""
    return frame.groupby(county_column, sort=True)[list(feature_names)].median()


def reference_rows(medians: pd.DataFrame, counties: Sequence[str] | np.ndarray) -> np.ndarray:
    """(n, features) comparison values for rows in these counties (NaN when unknown)."""
    return medians.reindex(pd.Index(np.asarray(counties))).to_numpy(dtype=np.float64,
                                                                    na_value=np.nan)
