"""`simulate`: build a province, live through it month by month, write raw/ and truth/."""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from doudi.errors import UserError
from doudi.settings import Settings
from province import timeutil
from province.dynamics import MonthOutcome, step
from province.identity import Divisions
from province.params import WorldParams
from province.records import Batch, Records, concat, dedupe_versions
from province.state import State
from province.truth import average_precision, contract_labels, oracle_probabilities, roc_auc
from province.world import Registry, build_world
from province.writer import BadRow, Outage, Writer

LABEL_FEEDS = ("households", "persons", "monitoring_events", "social_assistance")
OUTAGE_FEEDS = ("employment", "medical")


@dataclass(frozen=True)
class _Period:
    """The months of a run: burn-in from `first`, reported from `start` to `end`."""

    first: int  # the first burn-in month
    start: int  # the first reported month (the roster's)
    end: int  # the last reported month
    horizon: int  # months ahead a label looks

    @classmethod
    def of(cls, start: str, months: int, horizon: int, params: WorldParams) -> _Period:
        start_month = timeutil.parse_month(start)
        return cls(
            start_month - params.burn_in_months, start_month, start_month + months - 1, horizon
        )

    @property
    def roster_day(self) -> int:
        return int(timeutil.first_day(self.start))

    @property
    def as_of_months(self) -> list[int]:
        """The months with a whole horizon inside the period: the labelled ones."""
        return list(range(self.start, self.end - self.horizon + 1))

    def years(self) -> range:
        """Every year from the burn-in to the last horizon (their monitoring lines)."""
        last = self.end + self.horizon
        return range(int(timeutil.year_of(self.first)), int(timeutil.year_of(last)) + 1)


@dataclass(frozen=True)
class _Oracle:
    """The as-of months the oracle forward-simulates, each with its own stream, and the
    households it follows."""

    rng: dict[int, np.random.Generator]
    sample: np.ndarray

    @classmethod
    def seeded(
        cls, seed: np.random.SeedSequence, period: _Period, households: int, params: WorldParams
    ) -> _Oracle:
        months = period.as_of_months[-params.oracle_last_as_of_months :]
        # spawn order matters (a SeedSequence counts its children): months first, then sample
        rng = {
            m: np.random.default_rng(s)
            for m, s in zip(months, seed.spawn(len(months)), strict=True)
        }
        sample = np.random.default_rng(seed.spawn(1)[0]).choice(
            households, min(households, params.oracle_max_households), replace=False
        )
        return cls(rng, np.sort(sample))


@dataclass
class _Tally:
    """What the month loop keeps for the truth files and the summary."""

    label_rows: dict[str, list[Batch]] = field(default_factory=lambda: {f: [] for f in LABEL_FEEDS})
    onsets: dict[int, np.ndarray] = field(default_factory=dict)
    hardship_share: list[float] = field(default_factory=list)
    identified_total: list[int] = field(default_factory=list)
    identified_hardship: list[int] = field(default_factory=list)
    oracle_probability: dict[int, np.ndarray] = field(default_factory=dict)

    def count(self, state: State, outcome: MonthOutcome, was_hardship: np.ndarray) -> None:
        """A reported month's onsets, hardship share and identifications (true or not)."""
        self.onsets[outcome.month] = outcome.onset
        self.hardship_share.append(float(state.households.hardship.mean()))
        self.identified_total.append(int(outcome.identified.sum()))
        self.identified_hardship.append(int((outcome.identified & was_hardship).sum()))

    def keep_label_rows(self, written: dict[str, Batch]) -> None:
        for f in LABEL_FEEDS:
            if f in written:
                self.label_rows[f].append(written[f])


def simulate(
    out: Path,
    *,
    households: int,
    months: int,
    start: str,
    seed: int,
    settings: Settings | None = None,
    progress: Callable[[str, float], None] | None = None,
    params: WorldParams | None = None,
) -> dict[str, Any]:
    """Write a province to `out/raw` (the 14 feeds) and `out/truth`; return the summary."""
    settings = settings or Settings()
    params = params or WorldParams()
    _check_size(households, months, settings.horizon_months, params)
    report = progress or (lambda stage, fraction: None)
    raw_dir, truth_dir = _fresh_output_folders(Path(out))
    period = _Period.of(start, months, settings.horizon_months, params)
    lines = {y: settings.monitoring_line(y) for y in period.years()}
    world_seed, dyn_seed, rec_seed, write_seed, oracle_seed = np.random.SeedSequence(seed).spawn(5)

    report("building the province", 0.0)
    state, registry = build_world(
        households, period.first, params, np.random.default_rng(world_seed)
    )
    records = Records(registry, params, np.random.default_rng(rec_seed), period.roster_day)
    records.history(state, period.first)
    records.plan_divisions(period.start, period.end)
    write_rng = np.random.default_rng(write_seed)
    outages = _draw_outages(len(registry.county_codes), period.start, period.end, params, write_rng)
    writer = Writer(raw_dir, registry, params, write_rng, outages, period.roster_day)
    oracle = _Oracle.seeded(oracle_seed, period, households, params)
    world = _World(
        state, registry, records, writer, outages, np.random.default_rng(dyn_seed), params, lines
    )
    tally = _live_through(world, period, oracle, report)
    writer.close()
    report("truth", 1.0)
    return _write_truth(
        truth_dir, world, period, oracle, tally, months=months, start=start, seed=seed
    )


def _check_size(households: int, months: int, horizon: int, params: WorldParams) -> None:
    if months < 12:
        raise UserError(f"--months must be at least 12, got {months}")
    if months <= horizon + params.oracle_last_as_of_months:
        raise UserError(
            f"--months must exceed the horizon ({horizon}) plus "
            f"{params.oracle_last_as_of_months} as-of months, got {months}"
        )
    if households < 10:
        raise UserError(f"--households must be at least 10, got {households}")


def _fresh_output_folders(out: Path) -> tuple[Path, Path]:
    """Empty `out/raw` and `out/truth`: our own outputs only, a rerun replaces them."""
    raw_dir, truth_dir = out / "raw", out / "truth"
    for folder in (raw_dir, truth_dir):
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
    return raw_dir, truth_dir


@dataclass(frozen=True)
class _World:
    """The living province and what turns its months into files."""

    state: State
    registry: Registry
    records: Records
    writer: Writer
    outages: list[Outage]
    rng: np.random.Generator  # the dynamics' stream
    params: WorldParams
    lines: dict[int, float]  # monitoring line by year


def _live_through(
    world: _World, period: _Period, oracle: _Oracle, report: Callable[[str, float], None]
) -> _Tally:
    """Burn-in, then each reported month: step, records, files, tallies, oracle futures."""
    state, records, params = world.state, world.records, world.params
    tally = _Tally()
    total_steps = period.end - period.first + 1
    for k, m in enumerate(range(period.first, period.end + 1)):
        if m == period.start:
            records.roster(state)
        detection = m >= period.first + params.detection_after_burn_in_months
        was_hardship = state.households.hardship.copy()
        line = world.lines[int(timeutil.year_of(m))]
        outcome = step(state, m, world.rng, params, line, detection)
        records.month(state, outcome, flows=m >= period.start)
        if m >= period.start:
            tally.count(state, outcome, was_hardship)
            batches = records.pop_reported(int(timeutil.last_day(m)))
            if m == period.start:
                batches = {
                    f: _fold_onto_roster(f, b, period.roster_day) for f, b in batches.items()
                }
            tally.keep_label_rows(world.writer.write_month(m, batches))
            if m in oracle.rng:
                report("oracle futures", k / total_steps)
                tally.oracle_probability[m] = oracle_probabilities(
                    state, m, oracle.sample, period.horizon, params, world.lines, oracle.rng[m]
                )
        report("simulating months", (k + 1) / total_steps)
    for m in range(period.end + 1, period.end + period.horizon + 1):
        tally.onsets[m] = np.zeros(len(state.households.village), dtype=bool)  # beyond the period
    return tally


def _write_truth(
    truth_dir: Path,
    world: _World,
    period: _Period,
    oracle: _Oracle,
    tally: _Tally,
    *,
    months: int,
    start: str,
    seed: int,
) -> dict[str, Any]:
    """Labels, oracle, listed rows, onsets, `summary.json` and `world.json`; the summary."""
    registry, writer = world.registry, world.writer
    households = len(world.state.households.village)
    rows = {f: concat(b) for f, b in tally.label_rows.items()}
    labels = contract_labels(
        rows, households, period.as_of_months, period.horizon, registry.household_ids, tally.onsets
    )
    label_stats, oracle_rows = _write_labels(
        truth_dir, labels, period.as_of_months, tally.oracle_probability, oracle.sample
    )
    _write_listed_rows(truth_dir / "bad_rows.csv", writer.bad_rows)
    _write_listed_rows(truth_dir / "warning_rows.csv", writer.warning_rows)
    _write_listed_rows(truth_dir / "pending_rows.csv", writer.pending_rows)
    _write_onsets(
        truth_dir / "hardship_onsets.parquet",
        tally.onsets,
        period.start,
        period.end,
        registry.household_ids,
    )
    summary = _summary(
        world, period, tally, label_stats, oracle_rows, months=months, start=start, seed=seed
    )
    (truth_dir / "summary.json").write_text(
        json.dumps(summary, ensure_ascii=False, indent=2, sort_keys=True), encoding="utf-8"
    )
    _write_world(truth_dir / "world.json", registry, world.outages)
    return summary


def _write_world(path: Path, registry: Registry, outages: list[Outage]) -> None:
    """Counties, villages, division renames and outages (`truth/world.json`)."""
    world = {
        "counties": [
            {"code": c, "name": nm}
            for c, nm in zip(registry.county_codes, registry.county_names, strict=True)
        ],
        "villages": registry.village_codes.tolist(),
        "division_renames": _renames(registry.divisions),
        "outages": [
            asdict(o)
            | {
                "first_month": timeutil.month_text(o.first_month),
                "last_month": timeutil.month_text(o.last_month),
                "county": registry.county_codes[o.county],
            }
            for o in outages
        ],
    }
    path.write_text(json.dumps(world, ensure_ascii=False, indent=1), encoding="utf-8")


def _write_labels(
    truth_dir: Path,
    tables: Iterator[pa.Table],
    as_of_months: list[int],
    oracle_probability: dict[int, np.ndarray],
    oracle_sample: np.ndarray,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stream labels.parquet; write oracle.parquet (in-scope rows); return stats and oracle."""
    stats, oracle_parts = [], []
    writer: pq.ParquetWriter | None = None
    for month, table in zip(as_of_months, tables, strict=True):
        if writer is None:
            writer = pq.ParquetWriter(truth_dir / "labels.parquet", table.schema)
        writer.write_table(table)
        in_scope = table.column("in_scope").to_numpy(zero_copy_only=False)
        label = table.column("label").to_numpy(zero_copy_only=False)
        began = table.column("hardship_began_in_horizon").to_numpy(zero_copy_only=False)
        stats.append(
            {
                "households": len(in_scope),
                "in_scope": int(in_scope.sum()),
                "labelled": int((in_scope & label).sum()),
                "began": int((in_scope & began).sum()),
                "began_and_labelled": int((in_scope & began & label).sum()),
            }
        )
        if month in oracle_probability:
            keep = in_scope[oracle_sample]
            rows = oracle_sample[keep]
            oracle_parts.append(
                pd.DataFrame(
                    {
                        "as_of": table.column("as_of")[0].as_py(),
                        "household_id": table.column("household_id").take(pa.array(rows)),
                        "probability": oracle_probability[month][keep],
                        "label": label[rows],
                    }
                )
            )
    assert writer is not None
    writer.close()
    oracle = pd.concat(oracle_parts, ignore_index=True)
    pq.write_table(
        pa.table(
            {
                "as_of": pa.array(oracle["as_of"], pa.date32()),
                "household_id": pa.array(oracle["household_id"], pa.string()),
                "probability": pa.array(oracle["probability"], pa.float64()),
            }
        ),
        truth_dir / "oracle.parquet",
    )
    return pd.DataFrame(stats), oracle


def _fold_onto_roster(feed: str, batch: Batch, roster_day: int) -> Batch:
    """History reported before the first extract arrives with it, on the roster day."""
    batch = dict(batch)
    batch["reported_date"] = np.maximum(batch["reported_date"], roster_day)
    return dedupe_versions(feed, batch)


def _renames(divisions: Divisions) -> list[dict[str, str]]:
    """Each planned rename: code, month, old and new name (public place names)."""
    out = []
    for k, month, name in zip(
        divisions.rename_division, divisions.rename_month, divisions.rename_name, strict=True
    ):
        out.append(
            {
                "code": str(divisions.codes[k]),
                "month": timeutil.month_text(int(month)),
                "old_name": divisions.names[int(divisions.name[k])],
                "new_name": divisions.names[int(name)],
            }
        )
    return out


def _draw_outages(
    n_counties: int, start_month: int, end_month: int, params: WorldParams, rng: np.random.Generator
) -> list[Outage]:
    length = min(params.outage_months, (end_month - start_month + 1) // 3)
    outages = []
    for feed in OUTAGE_FEEDS:
        first = start_month + 1 + int(rng.integers(0, end_month - start_month - length))
        outages.append(Outage(feed, int(rng.integers(0, n_counties)), first, first + length - 1))
    return outages


def _write_listed_rows(path: Path, rows: list[BadRow]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(["feed", "file", "row", "column", "reason"])
        for bad in sorted(rows, key=lambda b: (b.file, b.row)):
            out.writerow([bad.feed, bad.file, bad.row, bad.column, bad.reason])


def _write_onsets(
    path: Path,
    onsets: dict[int, np.ndarray],
    start_month: int,
    end_month: int,
    household_ids: np.ndarray,
) -> None:
    months, households = [], []
    for m in range(start_month, end_month + 1):
        idx = np.flatnonzero(onsets[m])
        households.append(household_ids[idx])
        months.append(np.full(len(idx), timeutil.month_text(m)))
    pq.write_table(
        pa.table(
            {
                "household_id": np.concatenate(households).astype(str),
                "onset_month": np.concatenate(months).astype(str),
            }
        ),
        path,
    )


def _auc(y: np.ndarray, score: np.ndarray) -> tuple[float | None, float | None]:
    if len(y) == 0 or y.min() == y.max():
        return None, None
    return roc_auc(y, score), average_precision(y, score)


def _summary(
    world: _World,
    period: _Period,
    tally: _Tally,
    label_stats: pd.DataFrame,
    oracle: pd.DataFrame,
    *,
    months: int,
    start: str,
    seed: int,
) -> dict[str, Any]:
    """The content of `summary.json`: sizes, rows per feed, base rates, the oracle's AUCs."""
    registry, writer, params = world.registry, world.writer, world.params
    totals = label_stats.sum()
    by_as_of = label_stats["labelled"] / label_stats["in_scope"]
    roc, pr = _auc(oracle["label"].to_numpy(), oracle["probability"].to_numpy())

    def per_feed(rows: list[BadRow]) -> dict[str, int]:
        counts: dict[str, int] = {}
        for row in rows:
            counts[row.feed] = counts.get(row.feed, 0) + 1
        return dict(sorted(counts.items()))

    return {
        "households": len(world.state.households.village),
        "persons": len(world.state.persons.hh),
        "counties": len(registry.county_codes),
        "villages": len(registry.village_codes),
        "months": months,
        "start": start,
        "seed": seed,
        "horizon_months": period.horizon,
        "files": writer.files,
        "rows_per_feed": dict(sorted(writer.rows_written.items())),
        "duplicates_per_feed": {k: v for k, v in sorted(writer.duplicates.items()) if v},
        "bad_rows_per_feed": per_feed(writer.bad_rows),
        "bad_rows": len(writer.bad_rows),
        "warning_rows_per_feed": per_feed(writer.warning_rows),
        "warning_rows": len(writer.warning_rows),
        "pending_rows_per_feed": per_feed(writer.pending_rows),
        "pending_rows": len(writer.pending_rows),
        "division_renames": len(registry.divisions.rename_division),
        "rows_reported_after_period": world.records.undelivered_rows(),
        "base_rate": float(totals["labelled"] / totals["in_scope"]),
        "base_rate_min_as_of": float(by_as_of.min()),
        "base_rate_max_as_of": float(by_as_of.max()),
        "in_scope_share": float(totals["in_scope"] / totals["households"]),
        "hardship_share": float(np.mean(tally.hardship_share)),
        "identifications": int(np.sum(tally.identified_total)),
        "false_alarm_share": float(
            1 - np.sum(tally.identified_hardship) / max(1, np.sum(tally.identified_total))
        ),
        "hardship_onsets_identified_share": float(
            totals["began_and_labelled"] / max(1, totals["began"])
        ),
        "oracle": {
            "rows": len(oracle),
            "as_of_months": sorted({str(d) for d in oracle["as_of"]}),
            "replicates": params.oracle_replicates,
            "base_rate": float(oracle["label"].mean()),
            "roc_auc": roc,
            "pr_auc": pr,
        },
        "monitoring_lines": {str(k): v for k, v in world.lines.items()},
        "params": params.as_dict(),
    }
