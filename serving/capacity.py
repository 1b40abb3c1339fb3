"""Visit capacity per township: how many model alerts each township's caseworkers get.

Caseworkers sit in townships, so the visits a month allows are counted per township, not
for the province as a whole (a province-wide top k can give one township thirty visits
and its neighbour none). Stage functions, pure and typed:

- `proportional_capacities`: the default, each township's share of the province's
  capacity in proportion to its in-scope households (largest remainder: the shares sum
  to the province's capacity exactly);
- `read_capacity_table` / `configured_capacities`: the configured table
  (`settings.township_capacity_file`, `settings.township_capacity`), checked row by row;
- `township_capacities`: the capacity of every township of a month's households;
- `allocate`: the alerts within each township's capacity, best province rank first;
- `capacity_report`: what the allocation gives up against the province-wide top k, in
  expected true positives (sums of calibrated risks).

Tiers stay province-wide (serving/scoring.py `assign_tiers`); docs/alerts-and-explanations.md
"Capacity per township" says why and what the figures mean.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from doudi.contract import TOWNSHIP_DIGITS
from doudi.errors import UserError
from doudi.settings import Settings

TABLE_COLUMNS = ("township_code", "capacity")
BY_TOWNSHIP_COLUMNS = [
    "township_code", "households", "capacity", "alerted", "province_top_k", "at_capacity",
    "expected_positives_alerted", "expected_positives_province_top_k",
]


def townships_of(village_codes: Sequence[str] | np.ndarray | pd.Series) -> np.ndarray:
    """The township code of each village code (`doudi.contract.township_of`, vectorised)."""
    return pd.Series(village_codes, dtype=str).str[:TOWNSHIP_DIGITS].to_numpy(dtype=object)


def province_capacity(households: int, settings: Settings) -> int:
    """Visits the province's caseworkers make in a month: the top `capacity_pct` (never more
    than the yellow tier's share) of `households` in-scope households, rounded up."""
    share = min(settings.capacity_pct, settings.tiers.yellow_top_pct)
    return math.ceil(households * share / 100.0 - 1e-9)


def proportional_capacities(counts: Mapping[str, int], total: int) -> dict[str, int]:
    """`total` visits shared in proportion to `counts` (households per township), by largest
    remainder: each township gets the whole part of its quota, and the visits left go to the
    largest remainders (then the larger township, then the smaller code), so the shares sum
    to `total` exactly and none exceeds its township's households while total <= their sum.
    """
    households = sum(counts.values())
    if households == 0 or total <= 0:
        return dict.fromkeys(counts, 0)
    # Integer arithmetic: quota = total * count / households, exactly.
    whole = {code: total * n // households for code, n in counts.items()}
    left = total - sum(whole.values())
    by_remainder = sorted(counts, key=lambda c: (-(total * counts[c] % households),
                                                 -counts[c], c))
    for code in by_remainder[:left]:
        whole[code] += 1
    return whole


def read_capacity_table(path: Path, *, known: Collection[str] | None = None,
                        ) -> dict[str, int]:
    """The table `township_code,capacity` at `path` (UTF-8, with or without BOM, or GBK).

    A malformed code, a capacity that is not a whole number >= 0, a township listed twice
    or (given `known`, the roster's townships) one not on the roster is a one-line
    UserError naming the file, the row (header = row 1) and the rule.
    """
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise UserError(f"township_capacity_file {path}: cannot read it "
                        f"({err.strerror or err})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("gbk", errors="replace")
    rows = list(csv.reader(text.splitlines()))
    header = [cell.strip() for cell in rows[0]] if rows else []
    if sorted(header) != sorted(TABLE_COLUMNS):
        raise UserError(f"{path}: row 1: the header must be {','.join(TABLE_COLUMNS)}, "
                        f"not {','.join(header) or 'empty'}")
    code_at, capacity_at = header.index("township_code"), header.index("capacity")
    table: dict[str, int] = {}
    first_row: dict[str, int] = {}
    for number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue  # a blank line, as spreadsheets leave at the end
        cells = [cell.strip() for cell in row] + [""] * len(header)
        code, value = cells[code_at], cells[capacity_at]
        problem = _entry_problem(code, value, known)
        if problem is None and code in table:
            problem = f"township {code} is listed twice (rows {first_row[code]} and {number})"
        if problem is not None:
            raise UserError(f"{path}: row {number}: {problem}")
        table[code] = int(value)
        first_row[code] = number
    return table


def configured_capacities(settings: Settings, *, known: Collection[str] | None = None,
                          ) -> dict[str, int]:
    """The configured capacities: `township_capacity_file`'s rows, then the
    `township_capacity` mapping (which wins for the townships it names)."""
    table = (read_capacity_table(settings.township_capacity_file, known=known)
             if settings.township_capacity_file is not None else {})
    for code, value in settings.township_capacity.items():
        problem = _entry_problem(str(code), str(value), known)
        if problem is not None:
            raise UserError(f"setting township_capacity (DOUDI_TOWNSHIP_CAPACITY): {code}: "
                            f"{problem}")
        table[str(code)] = int(value)
    return table


def _entry_problem(code: str, value: str, known: Collection[str] | None) -> str | None:
    """Why a configured (township, capacity) entry is refused, or None."""
    if not (len(code) == TOWNSHIP_DIGITS and code.isdigit()):
        return f"township_code must have {TOWNSHIP_DIGITS} digits, not {code!r}"
    try:
        capacity = int(value)
    except ValueError:
        return f"capacity must be a whole number of visits, not {value!r}"
    if capacity < 0:
        return f"capacity must be 0 or more visits, not {capacity}"
    if known is not None and code not in known:
        return f"township {code} is not on the households roster"
    return None


def township_capacities(townships: Sequence[str] | np.ndarray, settings: Settings, *,
                        known: Collection[str] | None = None) -> dict[str, int]:
    """The capacity of every township of `townships` (one entry per in-scope household):
    the configured one, else its proportional share of the province's capacity."""
    counts = pd.Series(townships, dtype=object).value_counts(sort=False)
    households = {str(code): int(n) for code, n in counts.items()}
    default = proportional_capacities(households, province_capacity(len(townships), settings))
    configured = configured_capacities(settings, known=known)
    return {code: configured.get(code, share) for code, share in default.items()}


def allocate(rank: np.ndarray, townships: Sequence[str] | np.ndarray,
             capacities: Mapping[str, int], eligible: np.ndarray | None = None) -> np.ndarray:
    """Who is alerted: in each township, its best-ranked eligible households (rank 1 = the
    province's highest), at most its capacity (a township not in `capacities` gets none).

    `rank` must order the households strictly (`assign_tiers` gives a permutation of 1..n).
    """
    rank = np.asarray(rank)
    n = len(rank)
    alerted = np.zeros(n, dtype=bool)
    candidates = np.arange(n) if eligible is None else np.flatnonzero(eligible)
    if len(candidates) == 0:
        return alerted
    township_index, codes = pd.factorize(np.asarray(townships, dtype=object)[candidates])
    limit = np.array([max(int(capacities.get(str(c), 0)), 0) for c in codes], dtype=np.int64)
    # Township first, best rank next; then each household's place within its township.
    order = np.lexsort((rank[candidates], township_index))
    grouped = township_index[order]
    starts = np.searchsorted(grouped, np.arange(len(codes)))
    place = np.arange(len(order)) - starts[grouped]
    alerted[candidates[order[place < limit[grouped]]]] = True
    return alerted


@dataclass(frozen=True)
class CapacityReport:
    """What the township allocation gives up against the province-wide top k.

    `capacity` is k, the visits of all townships with in-scope households; the province's
    top k are the k eligible households with the highest calibrated risk (the model's alerts
    without townships). Risks are calibrated probabilities, so their sums are expected
    true positives.
    """

    capacity: int
    alerted: int
    townships: int
    at_capacity: int  # townships whose alerts fill a capacity of 1 or more
    displaced: int  # province top-k households not alerted (their township was full)
    expected_top_k: float
    expected_alerted: float
    expected_loss: float  # expected true positives given up: expected_top_k - expected_alerted
    by_township: pd.DataFrame  # BY_TOWNSHIP_COLUMNS, one row per township

    def line(self) -> str:
        """One line for the monthly summary."""
        return (f"{self.capacity:,} visit(s) in {self.townships} township(s), "
                f"{self.at_capacity} at capacity; {self.alerted:,} model alert(s); "
                f"against the province-wide top {self.capacity:,} the allocation gives up "
                f"{self.expected_loss:.2f} expected true positive(s) "
                f"({self.expected_alerted:.2f} vs {self.expected_top_k:.2f}; "
                f"{self.displaced} top-{self.capacity:,} household(s) not alerted)")


def capacity_report(risk: np.ndarray, rank: np.ndarray, alerted: np.ndarray,
                    townships: Sequence[str] | np.ndarray, capacities: Mapping[str, int],
                    eligible: np.ndarray | None = None) -> CapacityReport:
    """The allocation `alerted` (model alerts) against the province-wide top k, k = the sum
    of `capacities` over the townships present; ties in risk are taken by rank."""
    risk = np.asarray(risk, dtype=np.float64)
    alerted = np.asarray(alerted, dtype=bool)
    frame = pd.DataFrame({"township_code": np.asarray(townships, dtype=object).astype(str),
                          "risk": risk})
    households = frame.groupby("township_code", sort=True).size()
    capacity = households.index.map(lambda c: max(int(capacities.get(c, 0)), 0)).to_numpy()
    k = int(capacity.sum())
    candidates = np.arange(len(risk)) if eligible is None else np.flatnonzero(eligible)
    best = candidates[np.lexsort((np.asarray(rank)[candidates], -risk[candidates]))[:k]]
    top_k = np.zeros(len(risk), dtype=bool)
    top_k[best] = True
    frame["alerted"], frame["top_k"] = alerted, top_k
    frame["risk_alerted"] = np.where(alerted, risk, 0.0)
    frame["risk_top_k"] = np.where(top_k, risk, 0.0)
    sums = frame.groupby("township_code", sort=True)[
        ["alerted", "top_k", "risk_alerted", "risk_top_k"]].sum()
    by_township = pd.DataFrame({
        "township_code": households.index.astype(str),
        "households": households.to_numpy(),
        "capacity": capacity,
        "alerted": sums["alerted"].to_numpy(dtype=np.int64),
        "province_top_k": sums["top_k"].to_numpy(dtype=np.int64),
    })
    by_township["at_capacity"] = (by_township["capacity"] > 0) & (
        by_township["alerted"] >= by_township["capacity"])
    by_township["expected_positives_alerted"] = sums["risk_alerted"].to_numpy()
    by_township["expected_positives_province_top_k"] = sums["risk_top_k"].to_numpy()
    return CapacityReport(
        capacity=k,
        alerted=int(alerted.sum()),
        townships=len(by_township),
        at_capacity=int(by_township["at_capacity"].sum()),
        displaced=int((top_k & ~alerted).sum()),
        expected_top_k=float(risk[top_k].sum()),
        expected_alerted=float(risk[alerted].sum()),
        expected_loss=_given_up(risk[top_k & ~alerted], risk[alerted & ~top_k]),
        by_township=by_township[BY_TOWNSHIP_COLUMNS].reset_index(drop=True),
    )


def _given_up(displaced: np.ndarray, instead: np.ndarray) -> float:
    """sum(displaced) - sum(instead), as a sum of differences that are each >= 0: the
    allocation alerts no more than k, so `instead` (alerted outside the top k) is no longer
    than `displaced` (top k, not alerted), and every risk outside the top k is <= every risk
    inside it. Pairing largest with largest keeps float rounding from making it negative."""
    width = max(len(displaced), len(instead))
    ours, theirs = np.zeros(width), np.zeros(width)
    ours[: len(displaced)] = np.sort(displaced)[::-1]
    theirs[: len(instead)] = np.sort(instead)[::-1]
    return float(np.sum(ours - theirs))
