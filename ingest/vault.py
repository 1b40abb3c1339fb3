"""The identity vault: pseudonym -> original identifier, the only home of raw identifiers.

    <home>/vault/persons/part-<run>.parquet            person_key, person_id
    <home>/vault/households/part-<run>.parquet         household_key, household_id
    <home>/vault/household_villages/part-<run>.parquet household_key, village_code, reported_date

The vault directory is 0700 and its files 0600. `reidentify` is the one way
back, for the audited caseworker export: every call appends who-asked-why (never
which identifiers) to `vault/audit.jsonl`.
"""

from __future__ import annotations

import getpass
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from doudi.settings import Settings

PERSONS = "persons"
HOUSEHOLDS = "households"
VILLAGES = "household_villages"
SCHEMAS: dict[str, pa.Schema] = {
    PERSONS: pa.schema([("person_key", pa.string()), ("person_id", pa.string())]),
    HOUSEHOLDS: pa.schema([("household_key", pa.string()), ("household_id", pa.string())]),
    VILLAGES: pa.schema(
        [("household_key", pa.string()), ("village_code", pa.string()),
         ("reported_date", pa.date32())]
    ),
}


@dataclass(frozen=True)
class Identity:
    """What the vault knows about one pseudonym."""

    pseudonym: str
    kind: str  # "person" or "household"
    identifier: str
    village_codes: tuple[str, ...] = ()  # households: every village on record, oldest first


def ensure_private_dir(path: Path) -> None:
    """Create `path` (and parents) and make it 0700: only the service account may enter."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)


def read_table(vault_dir: Path, name: str, columns: list[str] | None = None) -> pa.Table:
    folder = vault_dir / name
    files = sorted(str(p) for p in folder.glob("*.parquet")) if folder.is_dir() else []
    if not files:
        return SCHEMAS[name].empty_table().select(columns or SCHEMAS[name].names)
    return ds.dataset(files, schema=SCHEMAS[name], format="parquet").to_table(columns=columns)


def known_pseudonyms(vault_dir: Path) -> set[str]:
    """Every pseudonym the vault already holds (so each is stored once)."""
    persons = read_table(vault_dir, PERSONS, ["person_key"]).column(0).to_pylist()
    households = read_table(vault_dir, HOUSEHOLDS, ["household_key"]).column(0).to_pylist()
    return set(persons) | set(households)


def known_village_pairs(vault_dir: Path) -> pa.Array:
    """'<household_key>|<village_code>' for every village already on record."""
    table = read_table(vault_dir, VILLAGES, ["household_key", "village_code"])
    joined = pc.binary_join_element_wise(table["household_key"], table["village_code"], "|")
    return joined.combine_chunks() if isinstance(joined, pa.ChunkedArray) else joined


def _audit(vault_dir: Path, purpose: str, asked: int, found: int) -> None:
    record = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "user": getpass.getuser(),
        "purpose": purpose,
        "pseudonyms_asked": asked,
        "pseudonyms_found": found,
    }
    path = vault_dir / "audit.jsonl"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, ensure_ascii=False) + "\n")


def reidentify(
    pseudonyms: Iterable[str], settings: Settings, *, purpose: str
) -> dict[str, Identity]:
    """Original identifiers for `pseudonyms` (`p_...` people, `h_...` households).

    Unknown pseudonyms are left out of the result. `purpose` (e.g. "alert export
    2026-11, county 620102") is written to the vault's audit log with the counts.
    """
    if not purpose.strip():
        raise ValueError("reidentify needs a purpose for the audit log")
    wanted = sorted(set(pseudonyms))
    vault_dir = settings.vault_dir
    people = [p for p in wanted if p.startswith("p_")]
    homes = [p for p in wanted if p.startswith("h_")]
    found: dict[str, Identity] = {}
    if people:
        table = read_table(vault_dir, PERSONS)
        table = table.filter(pc.is_in(table["person_key"], value_set=pa.array(people)))
        for key, ident in zip(table["person_key"].to_pylist(), table["person_id"].to_pylist(),
                              strict=True):
            found[key] = Identity(key, "person", ident)
    if homes:
        table = read_table(vault_dir, HOUSEHOLDS)
        table = table.filter(pc.is_in(table["household_key"], value_set=pa.array(homes)))
        villages = read_table(vault_dir, VILLAGES)
        villages = villages.filter(pc.is_in(villages["household_key"], value_set=pa.array(homes)))
        villages = villages.sort_by([("reported_date", "ascending")])
        by_home: dict[str, list[str]] = {}
        for key, code in zip(villages["household_key"].to_pylist(),
                             villages["village_code"].to_pylist(), strict=True):
            by_home.setdefault(key, []).append(code)
        for key, ident in zip(table["household_key"].to_pylist(),
                              table["household_id"].to_pylist(), strict=True):
            found[key] = Identity(key, "household", ident, tuple(by_home.get(key, ())))
    if vault_dir.is_dir():
        _audit(vault_dir, purpose, len(wanted), len(found))
    return found
