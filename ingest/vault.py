"""The identity vault: pseudonym -> original identifier, the only home of raw identifiers.

    <home>/vault/persons/part-<run>.parquet            person_key, person_id
    <home>/vault/households/part-<run>.parquet         household_key, household_id
    <home>/vault/household_villages/part-<run>.parquet household_key, village_code, reported_date
    <home>/vault/person_names/part-<run>.parquet       person_key, name, status_date,
                                                       reported_date
    <home>/vault/household_phones/part-<run>.parquet   household_key, contact_phone,
                                                       reported_date

The vault directory is 0700 and its files 0600. `reidentify` and `contact_details`
are the only ways back, for the audited caseworker export: every call appends
who-asked-why (never which identifiers) to `vault/audit.jsonl`.
"""

from __future__ import annotations

import getpass
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from doudi.permissions import check_private_dir
from doudi.settings import Settings

PERSONS = "persons"
HOUSEHOLDS = "households"
VILLAGES = "household_villages"
PERSON_NAMES = "person_names"
HOUSEHOLD_PHONES = "household_phones"
# (feed, vault-only contract column) -> the vault table holding it
VAULT_COLUMNS: dict[tuple[str, str], str] = {
    ("persons", "name"): PERSON_NAMES,
    ("households", "contact_phone"): HOUSEHOLD_PHONES,
}
# version order of a vault table's rows, oldest first (the contract's, per feed)
_VERSION: dict[str, list[str]] = {
    PERSON_NAMES: ["status_date", "reported_date"],
    HOUSEHOLD_PHONES: ["reported_date"],
}
SCHEMAS: dict[str, pa.Schema] = {
    PERSONS: pa.schema([("person_key", pa.string()), ("person_id", pa.string())]),
    HOUSEHOLDS: pa.schema([("household_key", pa.string()), ("household_id", pa.string())]),
    VILLAGES: pa.schema(
        [("household_key", pa.string()), ("village_code", pa.string()),
         ("reported_date", pa.date32())]
    ),
    PERSON_NAMES: pa.schema(
        [("person_key", pa.string()), ("name", pa.string()), ("status_date", pa.date32()),
         ("reported_date", pa.date32())]
    ),
    HOUSEHOLD_PHONES: pa.schema(
        [("household_key", pa.string()), ("contact_phone", pa.string()),
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
    check_private_dir(vault_dir)
    folder = vault_dir / name
    files = sorted(str(p) for p in folder.glob("*.parquet")) if folder.is_dir() else []
    if not files:
        return SCHEMAS[name].empty_table().select(columns or SCHEMAS[name].names)
    return ds.dataset(files, schema=SCHEMAS[name], format="parquet").to_table(columns=columns)


class VaultCache:
    """The vault's tables read and indexed once for many lookups (a monthly export of
    every township reads the same tables hundreds of times). Each lookup through it is
    still audited on its own by `reidentify`/`contact_details`. Holds raw identifiers in
    memory: keep it for one export run, never beyond."""

    def __init__(self, vault_dir: Path) -> None:
        self.vault_dir = vault_dir
        self._sorted: dict[tuple[str, str], tuple[pa.Table, np.ndarray]] = {}

    def rows(self, name: str, key_column: str, wanted: list[str]) -> pa.Table:
        """The rows of table `name` whose `key_column` is in `wanted` (grouped by key, each
        key's rows in the vault's order)."""
        if (name, key_column) not in self._sorted:
            table = read_table(self.vault_dir, name)
            table = table.take(pc.sort_indices(table[key_column]))  # stable: order kept
            self._sorted[name, key_column] = (
                table, np.asarray(table[key_column].to_pylist(), dtype=object))
        table, keys = self._sorted[name, key_column]
        asked = np.asarray(sorted(set(wanted)), dtype=object)
        if not len(asked) or not len(keys):
            return table.slice(0, 0)
        first = np.searchsorted(keys, asked, side="left")
        last = np.searchsorted(keys, asked, side="right")
        spans = [np.arange(a, b) for a, b in zip(first, last, strict=True) if b > a]
        return table.take(np.concatenate(spans) if spans else np.array([], dtype=np.int64))


def _rows(vault_dir: Path, name: str, key_column: str, wanted: list[str],
          cache: VaultCache | None) -> pa.Table:
    if cache is not None:
        return cache.rows(name, key_column, wanted)
    table = read_table(vault_dir, name)
    return table.filter(pc.is_in(table[key_column], value_set=pa.array(wanted, pa.string())))


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


def latest_per_value(name: str, table: pa.Table) -> pa.Table:
    """One row per (pseudonym, value): its latest version. Enough to answer "the latest
    value" later, even when a value comes back (A, then B, then A again)."""
    key, value = SCHEMAS[name].names[:2]
    order = _VERSION[name]
    frame = table.to_pandas()
    frame = frame.sort_values([key, value, *order], kind="stable")
    frame = frame.drop_duplicates([key, value], keep="last")
    return pa.Table.from_pandas(frame, schema=SCHEMAS[name], preserve_index=False)


def _audit(vault_dir: Path, purpose: str, asked: int, found: int,
           read: str = "identifiers") -> None:
    record = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "user": getpass.getuser(),
        "purpose": purpose,
        "read": read,
        "pseudonyms_asked": asked,
        "pseudonyms_found": found,
    }
    path = vault_dir / "audit.jsonl"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, ensure_ascii=False) + "\n")


def reidentify(
    pseudonyms: Iterable[str], settings: Settings, *, purpose: str,
    cache: VaultCache | None = None,
) -> dict[str, Identity]:
    """Original identifiers for `pseudonyms` (`p_...` people, `h_...` households).

    Unknown pseudonyms are left out of the result. `purpose` (e.g. "alert export
    2026-11, county 620102") is written to the vault's audit log with the counts.
    `cache`: read the tables once for many calls (`VaultCache`).
    """
    if not purpose.strip():
        raise ValueError("reidentify needs a purpose for the audit log")
    wanted = sorted(set(pseudonyms))
    vault_dir = settings.vault_dir
    people = [p for p in wanted if p.startswith("p_")]
    homes = [p for p in wanted if p.startswith("h_")]
    found: dict[str, Identity] = {}
    if people:
        table = _rows(vault_dir, PERSONS, "person_key", people, cache)
        for key, ident in zip(table["person_key"].to_pylist(), table["person_id"].to_pylist(),
                              strict=True):
            found[key] = Identity(key, "person", ident)
    if homes:
        table = _rows(vault_dir, HOUSEHOLDS, "household_key", homes, cache)
        villages = _rows(vault_dir, VILLAGES, "household_key", homes, cache)
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


@dataclass(frozen=True)
class ContactDetails:
    """Names by person pseudonym and phone numbers by household pseudonym."""

    names: dict[str, str]
    phones: dict[str, str]


def _latest_values(vault_dir: Path, name: str, wanted: list[str],
                   cache: VaultCache | None = None) -> dict[str, str]:
    if not wanted:
        return {}
    key, value = SCHEMAS[name].names[:2]
    table = _rows(vault_dir, name, key, wanted, cache)
    frame = table.to_pandas().sort_values([key, *_VERSION[name], value], kind="stable")
    latest = frame.drop_duplicates(key, keep="last")
    return dict(zip(latest[key], latest[value], strict=True))


def contact_details(
    pseudonyms: Iterable[str], settings: Settings, *, purpose: str,
    cache: VaultCache | None = None,
) -> ContactDetails:
    """The name of each person pseudonym (`p_...`, from `persons.name`) and the contact
    phone of each household pseudonym (`h_...`, `households.contact_phone`): the latest
    version known (persons: latest `status_date`, then `reported_date`; households: latest
    `reported_date`). Rows without a value do not erase an earlier one. Pseudonyms
    without one are left out. Audited like `reidentify` (purpose and counts only).
    """
    if not purpose.strip():
        raise ValueError("contact_details needs a purpose for the audit log")
    wanted = sorted(set(pseudonyms))
    vault_dir = settings.vault_dir
    names = _latest_values(vault_dir, PERSON_NAMES, [p for p in wanted if p.startswith("p_")],
                           cache)
    phones = _latest_values(vault_dir, HOUSEHOLD_PHONES,
                            [p for p in wanted if p.startswith("h_")], cache)
    if vault_dir.is_dir():
        _audit(vault_dir, purpose, len(wanted), len(names) + len(phones), "names_and_phones")
    return ContactDetails(names, phones)
