"""Against the generator's small province: exactly the planted bad rows are quarantined."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

import ingest
from doudi.settings import Settings
from ingest.vault import read_table
from tests.ingest.ingest_world import quarantine_table, readable_contents


@pytest.fixture(scope="module")
def ingested(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
             ) -> tuple[Path, Settings, ingest.IngestReport]:
    try:
        world: Path = request.getfixturevalue("small_world")
    except pytest.FixtureLookupError:  # pragma: no cover - only before the generator lands
        pytest.skip("the generator's small_world fixture (tests/conftest.py) does not exist yet")
    settings = Settings(home=tmp_path_factory.mktemp("small_world_ws"), pseudonym_key_file=None)
    report = ingest.ingest(world / "raw", settings)
    return world, settings, report


def test_quarantine_is_exactly_the_planted_bad_rows(
    ingested: tuple[Path, Settings, ingest.IngestReport],
) -> None:
    world, settings, _ = ingested
    with (world / "truth" / "bad_rows.csv").open(encoding="utf-8") as fh:
        truth = {(b["feed"], b["file"], int(b["row"]), b["reason"]) for b in csv.DictReader(fh)}
    table = quarantine_table(settings)
    got = set(zip(table["feed"].to_pylist(), table["source_file"].to_pylist(),
                  table["source_row"].to_pylist(), table["rule"].to_pylist(), strict=True))
    assert truth, "the generator planted no bad rows"
    assert got == truth


def test_every_other_row_is_in_the_warehouse(
    ingested: tuple[Path, Settings, ingest.IngestReport],
) -> None:
    world, _, report = ingested
    summary = json.loads((world / "truth" / "summary.json").read_text(encoding="utf-8"))
    for feed_name, clean_rows in summary["rows_per_feed"].items():
        feed = report.feeds[feed_name]
        bad = summary["bad_rows_per_feed"].get(feed_name, 0)
        duplicates = summary["duplicates_per_feed"].get(feed_name, 0)
        assert feed.rows == clean_rows + bad + duplicates, feed_name
        assert feed.quarantined == bad, feed_name
        assert feed.duplicates == duplicates, feed_name
        assert feed.accepted == clean_rows, feed_name


def test_rerun_adds_nothing(ingested: tuple[Path, Settings, ingest.IngestReport]) -> None:
    world, settings, _ = ingested
    again = ingest.ingest(world / "raw", settings)
    assert again.accepted == 0 and again.quarantined == 0
    assert all(f.skipped for f in again.files)


def test_no_raw_identifiers_outside_vault_and_quarantine(
    ingested: tuple[Path, Settings, ingest.IngestReport],
) -> None:
    _, settings, _ = ingested
    outside = readable_contents(settings.home, skip=("vault", "quarantine"))
    id_numbers = set(read_table(settings.vault_dir, "persons")["person_id"].to_pylist())
    household_numbers = set(
        read_table(settings.vault_dir, "households")["household_id"].to_pylist())
    assert id_numbers and household_numbers
    tokens = set(re.findall(r"[0-9A-Za-z_]+", outside))
    assert not tokens & id_numbers
    assert not tokens & household_numbers
