"""`simulate`: build a province, live through it month by month, write raw/ and truth/."""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from doudi.errors import UserError
from doudi.settings import Settings
from province import timeutil
from province.dynamics import step
from province.identity import Divisions
from province.params import WorldParams
from province.records import Batch, Records, concat, dedupe_versions
from province.truth import average_precision, contract_labels, oracle_probabilities, roc_auc
from province.world import build_world
from province.writer import BadRow, Outage, Writer

LABEL_FEEDS = ("households", "persons", "monitoring_events", "social_assistance")
OUTAGE_FEEDS = ("employment", "medical")


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
    horizon = settings.horizon_months
    if months < 12:
        raise UserError(f"--months must be at least 12, got {months}")
    if months <= horizon + params.oracle_last_as_of_months:
        raise UserError(
            f"--months must exceed the horizon ({horizon}) plus "
            f"{params.oracle_last_as_of_months} as-of months, got {months}"
        )
    if households < 10:
        raise UserError(f"--households must be at least 10, got {households}")
    report = progress or (lambda stage, fraction: None)

    out = Path(out)
    raw_dir, truth_dir = out / "raw", out / "truth"
    for folder in (raw_dir, truth_dir):  # our own outputs only: a rerun replaces them
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)

    start_month = timeutil.parse_month(start)
    first_month = start_month - params.burn_in_months
    end_month = start_month + months - 1
    years = range(
        int(timeutil.year_of(first_month)), int(timeutil.year_of(end_month + horizon)) + 1
    )
    lines = {y: settings.monitoring_line(y) for y in years}
    world_seed, dyn_seed, rec_seed, write_seed, oracle_seed = np.random.SeedSequence(seed).spawn(5)

    report("building the province", 0.0)
    state, registry = build_world(
        households, first_month, params, np.random.default_rng(world_seed)
    )
    roster_day = int(timeutil.first_day(start_month))
    records = Records(registry, params, np.random.default_rng(rec_seed), roster_day)
    records.history(state, first_month)
    records.plan_divisions(start_month, end_month)
    write_rng = np.random.default_rng(write_seed)
    outages = _draw_outages(len(registry.county_codes), start_month, end_month, params, write_rng)
    writer = Writer(raw_dir, registry, params, write_rng, outages, roster_day)

    as_of_months = list(range(start_month, end_month - horizon + 1))
    oracle_months = as_of_months[-params.oracle_last_as_of_months :]
    oracle_rng = {
        m: np.random.default_rng(s)
        for m, s in zip(oracle_months, oracle_seed.spawn(len(oracle_months)), strict=True)
    }
    n = households
    oracle_sample = np.sort(
        np.random.default_rng(oracle_seed.spawn(1)[0]).choice(
            n, min(n, params.oracle_max_households), replace=False
        )
    )
    dyn_rng = np.random.default_rng(dyn_seed)
    label_rows: dict[str, list[Batch]] = {f: [] for f in LABEL_FEEDS}
    onsets: dict[int, np.ndarray] = {}
    hardship_share: list[float] = []
    identified_hardship: list[int] = []
    identified_total: list[int] = []
    oracle_probability: dict[int, np.ndarray] = {}

    total_steps = end_month - first_month + 1
    for k, m in enumerate(range(first_month, end_month + 1)):
        if m == start_month:
            records.roster(state)
        detection = m >= first_month + params.detection_after_burn_in_months
        was_hardship = state.households.hardship.copy()
        outcome = step(state, m, dyn_rng, params, lines[int(timeutil.year_of(m))], detection)
        records.month(state, outcome, flows=m >= start_month)
        if m >= start_month:
            onsets[m] = outcome.onset
            hardship_share.append(float(state.households.hardship.mean()))
            identified_total.append(int(outcome.identified.sum()))
            identified_hardship.append(int((outcome.identified & was_hardship).sum()))
            batches = records.pop_reported(int(timeutil.last_day(m)))
            if m == start_month:
                batches = {f: _fold_onto_roster(f, b, roster_day) for f, b in batches.items()}
            kept = writer.write_month(m, batches)
            for f in LABEL_FEEDS:
                if f in kept:
                    label_rows[f].append(kept[f])
            if m in oracle_rng:
                report("oracle futures", k / total_steps)
                oracle_probability[m] = oracle_probabilities(
                    state, m, oracle_sample, horizon, params, lines, oracle_rng[m]
                )
        report("simulating months", (k + 1) / total_steps)
    for m in range(end_month + 1, end_month + horizon + 1):
        onsets[m] = np.zeros(n, dtype=bool)  # beyond the period: not used by labelled months

    writer.close()
    report("truth", 1.0)
    rows = {f: concat(b) for f, b in label_rows.items()}
    label_stats, oracle = _write_labels(
        truth_dir,
        contract_labels(rows, n, as_of_months, horizon, registry.household_ids, onsets),
        as_of_months,
        oracle_probability,
        oracle_sample,
    )
    _write_listed_rows(truth_dir / "bad_rows.csv", writer.bad_rows)
    _write_listed_rows(truth_dir / "warning_rows.csv", writer.warning_rows)
    _write_listed_rows(truth_dir / "pending_rows.csv", writer.pending_rows)
    _write_onsets(
        truth_dir / "hardship_onsets.parquet",
        onsets,
        start_month,
        end_month,
        registry.household_ids,
    )

    summary = _summary(
        households=n,
        persons=len(state.persons.hh),
        months=months,
        start=start,
        seed=seed,
        writer=writer,
        label_stats=label_stats,
        oracle=oracle,
        params=params,
        lines=lines,
        hardship_share=hardship_share,
        identified_total=identified_total,
        identified_hardship=identified_hardship,
        undelivered=records.undelivered_rows(),
        counties=len(registry.county_codes),
        villages=len(registry.village_codes),
        horizon=horizon,
        division_renames=len(registry.divisions.rename_division),
    )
    (truth_dir / "summary.json").write_text(
        json.dumps(summary, ensure_ascii=False, indent=2, sort_keys=True), encoding="utf-8"
    )
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
    (truth_dir / "world.json").write_text(
        json.dumps(world, ensure_ascii=False, indent=1), encoding="utf-8"
    )
    return summary


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
    *,
    households: int,
    persons: int,
    months: int,
    start: str,
    seed: int,
    writer: Writer,
    label_stats: pd.DataFrame,
    oracle: pd.DataFrame,
    params: WorldParams,
    lines: dict[int, float],
    hardship_share: list[float],
    identified_total: list[int],
    identified_hardship: list[int],
    undelivered: int,
    counties: int,
    villages: int,
    horizon: int,
    division_renames: int,
) -> dict[str, Any]:
    totals = label_stats.sum()
    by_as_of = label_stats["labelled"] / label_stats["in_scope"]
    roc, pr = _auc(oracle["label"].to_numpy(), oracle["probability"].to_numpy())

    def per_feed(rows: list[BadRow]) -> dict[str, int]:
        counts: dict[str, int] = {}
        for row in rows:
            counts[row.feed] = counts.get(row.feed, 0) + 1
        return dict(sorted(counts.items()))

    return {
        "households": households,
        "persons": persons,
        "counties": counties,
        "villages": villages,
        "months": months,
        "start": start,
        "seed": seed,
        "horizon_months": horizon,
        "files": writer.files,
        "rows_per_feed": dict(sorted(writer.rows_written.items())),
        "duplicates_per_feed": {k: v for k, v in sorted(writer.duplicates.items()) if v},
        "bad_rows_per_feed": per_feed(writer.bad_rows),
        "bad_rows": len(writer.bad_rows),
        "warning_rows_per_feed": per_feed(writer.warning_rows),
        "warning_rows": len(writer.warning_rows),
        "pending_rows_per_feed": per_feed(writer.pending_rows),
        "pending_rows": len(writer.pending_rows),
        "division_renames": division_renames,
        "rows_reported_after_period": undelivered,
        "base_rate": float(totals["labelled"] / totals["in_scope"]),
        "base_rate_min_as_of": float(by_as_of.min()),
        "base_rate_max_as_of": float(by_as_of.max()),
        "in_scope_share": float(totals["in_scope"] / totals["households"]),
        "hardship_share": float(np.mean(hardship_share)),
        "identifications": int(np.sum(identified_total)),
        "false_alarm_share": float(
            1 - np.sum(identified_hardship) / max(1, np.sum(identified_total))
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
        "monitoring_lines": {str(k): v for k, v in lines.items()},
        "params": params.as_dict(),
    }
