"""Alert explanations: TreeSHAP contributions grouped into reasons a caseworker reads.

1. Contributions come from the artifact (LightGBM `pred_contrib`, exact TreeSHAP on
   the raw margin = log-odds scale; the last column is the bias). Per row they sum to
   the raw margin.
2. Features are grouped by the registry's `group` (windows of one signal, member
   counts, one-hot levels...): a group's contribution is the plain sum of its
   members' contributions, so the groups plus the bias still sum to the margin.
3. At most `max_reasons` groups that push the risk UP are kept, strongest first. A
   group is a reason only if it has something known to say: a missing value (NaN) is
   never a reason by itself; it is quoted only where the registry documents what its
   absence means (`FeatureDefinition.absent_zh`, e.g. "住房从未做过安全鉴定", and the
   feed was delivered), and the `<feed>_feed_missing` indicators are never reasons.
   A group with nothing to say is passed over for the next one.
4. Each reason is a Chinese sentence built from the registry's `template_zh` with
   the household's own values (the one or two members of the group that push
   hardest), a comparison with the county median at T for numeric values, and
   the group's size in probability points (`points_per_logodds`): the risk that the
   household's risk-raising groups together add (its calibrated risk minus the
   calibrated risk at its margin without them) shared among those groups in
   proportion to their log-odds contributions. Defined for every household (alerted or
   not), the sizes of all risk-raising groups add up to that lift, so the reasons
   shown never add up to more than the risk itself. (Leave-one-group-out differences do
   not add up and, through a step-shaped isotonic calibrator, gave tied sizes for 90% of
   the alerts: measured.) Log-odds stay in `ExplainedReason.margin`, never in the text.

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
from features.registry import BY_NAME, FEED_MISSING, OPTIONAL_FEEDS, FeatureDefinition

PROBABILITY_POINTS = "probability points"
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
    contribution: float  # size in probability points of calibrated risk (`scale`)
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
        self._absence_flag = [self._absence_flag_of(s, names) for s in self.specs]
        self._risk_types = [None if self.specs[m[0]].is_absence_indicator
                            else self.specs[m[0]].risk_type for m in self._members]

    @staticmethod
    def _absence_flag_of(spec: FeatureDefinition, names: Sequence[str]) -> int | None:
        """Column of the indicator saying `spec`'s feed is absent for the county: -1 for a
        required feed (always delivered), None when the model lacks it (absence unknown)."""
        if spec.feed not in OPTIONAL_FEEDS:
            return -1
        flag = FEED_MISSING.name(spec.feed)
        return names.index(flag) if flag in names else None

    def group_risk_type(self, group: str) -> str | None:
        """The contract risk type a reason of `group` speaks to (None: context, absence)."""
        return self._risk_types[self.groups.index(group)]

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
        # Strongest risk-raising groups first; ties broken by group order (stable). A few
        # more candidates than reasons: groups with nothing known to say are passed over.
        order = np.argsort(-grouped, axis=1, kind="stable")
        candidates = min(grouped.shape[1], 2 * k + 4)
        points = grouped * self.points_per_logodds(contrib)[:, None]
        # Per-row work below is plain Python on lists: numpy calls on 2-20 element
        # slices cost more than they save (this loop runs for every alert).
        top_l = order[:, :candidates].tolist()
        out: list[list[ExplainedReason]] = []
        for i in range(n):
            row: list[ExplainedReason] = []
            if grouped[i, top_l[i][0]] < MIN_REASON_MARGIN:
                out.append(row)
                continue
            vals, cons = values[i].tolist(), contrib[i].tolist()
            ref = None if reference is None else reference[i].tolist()
            ranked = top_l[i] if candidates == grouped.shape[1] else (
                top_l[i] + order[i, candidates:].tolist())
            for g in ranked:
                m = float(grouped[i, g])
                if m < MIN_REASON_MARGIN or len(row) == k:
                    break
                sentence = self._sentence(g, vals, cons, ref)
                if sentence is None:
                    continue
                size = float(points[i, g])
                row.append(ExplainedReason(len(row) + 1, self.groups[g],
                                           sentence + _size_text(size), size, m))
            out.append(row)
        return out

    def points_per_logodds(self, contrib: np.ndarray) -> np.ndarray:
        """Per row: probability points of risk per unit of risk-raising log-odds.

        With P the sum of the risk-raising groups' contributions, 100 x (calibrated risk
        at the margin - calibrated risk at margin - P) / P: a group's share of the risk its
        household's risk-raising groups add. 0 where no group raises the risk.
        """
        contrib = np.asarray(contrib)
        margin = contrib.sum(axis=1)
        raising = np.clip(self.group_contributions(contrib), 0.0, None).sum(axis=1)
        calibrate = self.artifact.calibrator.apply
        lifted = (calibrate(margin) - calibrate(margin - raising)) * 100.0
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(raising > 0, lifted / raising, 0.0)

    def _sentence(self, g: int, values: list[float], contrib: list[float],
                  reference: list[float] | None) -> str | None:
        """The group's sentence, or None when it has nothing known to say."""
        members = self._members[g]
        pushing = sorted(members, key=lambda j: -contrib[j]) if len(members) > 1 else members
        pushing = [j for j in pushing if contrib[j] > 0] or pushing[:1]
        known = [j for j in pushing if self._says_something(j, values)]
        # Lead with recorded, non-zero values (a 0 flag or an absence rarely reads well).
        known.sort(key=lambda j: 0 if self._present(values[j]) else
                   (1 if not math.isnan(values[j]) else 2))
        parts = [self._member_text(j, values[j], None if reference is None else reference[j])
                 for j in known[:2]]
        return "，".join(dict.fromkeys(parts)) or None

    def _says_something(self, j: int, values: list[float]) -> bool:
        """A member worth quoting: a recorded value, or an absence its registry entry
        documents (and only when its feed was delivered); never a feed-absence flag."""
        spec = self.specs[j]
        if spec.is_absence_indicator:
            return False
        if not math.isnan(values[j]):
            return True
        flag = self._absence_flag[j]
        delivered = flag is not None and (flag < 0 or values[flag] == 0)
        return bool(spec.absent_zh) and delivered

    @staticmethod
    def _present(value: float) -> bool:
        """A value worth quoting first: recorded and not zero (no event, flag off)."""
        return not math.isnan(value) and value != 0

    def _member_text(self, j: int, value: float, reference: float | None) -> str:
        spec = self.specs[j]
        if math.isnan(value):
            return spec.absent_zh  # only for documented absences (`_says_something`)
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


def _size_text(points: float) -> str:
    """A reason's size, always in probability points of calibrated risk."""
    if points < 0.05:
        return "〔风险 +<0.1 个百分点〕"
    return f"〔风险 {points:+.1f} 个百分点〕"


def county_medians(
    frame: pd.DataFrame, feature_names: Sequence[str], county_column: str = "county_code",
) -> pd.DataFrame:
    """Median of each feature per county among the frame's households (known at T)."""
    return frame.groupby(county_column, sort=True)[list(feature_names)].median()


def reference_rows(medians: pd.DataFrame, counties: Sequence[str] | np.ndarray) -> np.ndarray:
    """(n, features) comparison values for rows in these counties (NaN when unknown)."""
    return medians.reindex(pd.Index(np.asarray(counties))).to_numpy(dtype=np.float64,
                                                                    na_value=np.nan)
