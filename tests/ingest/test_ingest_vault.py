"""Pseudonyms and the identity vault: stable, keyed, reversible only through the vault."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pyarrow.compute as pc
import pytest

import ingest
from ingest.pseudonyms import load_key, pseudonym
from ingest.vault import VaultCache, contact_details, reidentify
from tests.ingest.ingest_world import PEOPLE, delivery, warehouse_table, workspace, write_delivery


def test_pseudonyms_are_keyed_hmacs_and_the_vault_reverses_them(tmp_path: Path) -> None:
    settings = workspace(tmp_path)
    ingest.ingest(write_delivery(tmp_path / "raw"), settings)
    key = settings.key_file.read_bytes()
    assert len(key) == 32
    assert stat.S_IMODE(settings.key_file.stat().st_mode) == 0o600

    head = PEOPLE["H0001"][0]
    persons = warehouse_table(settings, "persons")
    expected = pseudonym(key, "person", head)
    assert expected.startswith("p_") and len(expected) == 22
    assert expected in persons["person_key"].to_pylist()
    households = warehouse_table(settings, "households")
    assert expected in households["head_person_key"].to_pylist()  # heads join to persons
    home_key = pseudonym(key, "household", "H0001")
    assert home_key.startswith("h_")

    found = reidentify([expected, home_key, "p_unknown"], settings, purpose="test export")

    assert found[expected].identifier == head
    assert found[home_key].identifier == "H0001"
    assert found[home_key].village_codes == ("620102001001",)
    assert "p_unknown" not in found
    audit = [json.loads(line) for line in
             (settings.vault_dir / "audit.jsonl").read_text().splitlines()]
    assert audit[-1]["purpose"] == "test export"
    assert (audit[-1]["pseudonyms_asked"], audit[-1]["pseudonyms_found"]) == (3, 2)
    assert head not in (settings.vault_dir / "audit.jsonl").read_text()


def test_reidentify_needs_a_purpose(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="purpose"):
        reidentify(["p_x"], workspace(tmp_path), purpose=" ")


def test_relocation_adds_a_village_and_each_identifier_is_vaulted_once(tmp_path: Path) -> None:
    settings = workspace(tmp_path)
    ingest.ingest(write_delivery(tmp_path / "jan"), settings)
    moved = delivery()
    moved["households"] = [dict(moved["households"][0], village_code="620103002001",
                                relocated="true", reported_date="2024-03-01")]
    moved["persons"] = moved["persons"][:1]
    moved["medical"] = []
    moved["monitoring_events"] = []
    ingest.ingest(write_delivery(tmp_path / "mar", moved, tag="2024-03"), settings)

    key = pseudonym(settings.key_file.read_bytes(), "household", "H0001")
    found = reidentify([key], settings, purpose="test")
    assert found[key].village_codes == ("620102001001", "620103002001")
    vaulted = list((settings.vault_dir / "households").glob("*.parquet"))
    assert len(vaulted) == 1  # the second run issued no new household pseudonym
    households = warehouse_table(settings, "households")
    rows = households.filter(pc.equal(households["household_key"], key))
    assert sorted(rows["county_code"].to_pylist()) == ["620102", "620103"]


def test_key_file_is_created_once_and_can_be_shared(tmp_path: Path) -> None:
    shared = tmp_path / "keys" / "doudi.key"
    first = load_key(shared, create=True)
    assert first is not None and load_key(shared, create=False) == first
    assert load_key(tmp_path / "absent.key", create=False) is None


def test_a_vault_cache_answers_as_the_vault_and_every_lookup_is_audited(
    tmp_path: Path,
) -> None:
    """A monthly export reads the vault once (`VaultCache`): same answers as reading it
    each time, for any subset asked, and still one audit line per lookup."""
    settings = workspace(tmp_path)
    ingest.ingest(write_delivery(tmp_path / "raw"), settings)
    key = settings.key_file.read_bytes()
    homes = [pseudonym(key, "household", h) for h in PEOPLE]
    people = [pseudonym(key, "person", p) for members in PEOPLE.values() for p in members]
    everyone = [*homes, *people, "p_unknown", "h_unknown"]
    cache = VaultCache(settings.vault_dir)
    audit = settings.vault_dir / "audit.jsonl"
    for asked in (everyone, everyone[::2], everyone[1::3], homes[:1], ["p_unknown"], []):
        before = len(audit.read_text().splitlines()) if audit.exists() else 0
        assert reidentify(asked, settings, purpose="t", cache=cache) == \
            reidentify(asked, settings, purpose="t")
        assert contact_details(asked, settings, purpose="t", cache=cache) == \
            contact_details(asked, settings, purpose="t")
        assert len(audit.read_text().splitlines()) == before + 4
    found = reidentify(everyone, settings, purpose="t", cache=cache)
    assert len(found) == len(homes) + len(people) > 2
