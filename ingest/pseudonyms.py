"""Keyed pseudonyms: HMAC-SHA256 of an identifier under a secret workspace key.

`p_` + 20 hex characters for people (person_id and head_person_id share the
space, so a head's key joins to their persons rows), `h_` + 20 for households.
The key never leaves its file; without it a pseudonym cannot be recomputed.
"""

from __future__ import annotations

import hmac
import os
import secrets
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from doudi.permissions import check_private
from doudi.registry import KEY_BYTES, read_key
from ingest.checks import id_codes

DIGEST_HEX = 20
PREFIX = {"person": "p_", "household": "h_"}
KIND_OF_COLUMN = {"person_id": "person", "head_person_id": "person", "household_id": "household"}


def check_key_file(key_file: Path) -> None:
    """The pseudonym key must be the running user's and 0600 (or 0400)."""
    check_private(key_file, what="the pseudonym key", mode="600")


def load_key(key_file: Path, *, create: bool) -> bytes | None:
    """The workspace key; created (0600, 32 random bytes) when `create` and absent.
    A key file other users could read, or another user owns, is refused (`read_key`)."""
    key = read_key(key_file)  # shared with the model registry's workspace fingerprint
    if key is not None:
        return key
    if not create:
        return None
    key_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = secrets.token_bytes(KEY_BYTES)
    try:
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process won the race: use its key
        return key_file.read_bytes()
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)
        fh.flush()
        os.fsync(fh.fileno())
    sys.stderr.write(
        f"doudi: created a new pseudonym key at {key_file}. BACK IT UP somewhere safe: "
        "without it no pseudonym can be recomputed and new data will not join old data.\n"
    )
    return key


def pseudonym(key: bytes, kind: str, identifier: str) -> str:
    """The pseudonym of one identifier (`kind` is 'person' or 'household')."""
    mac = hmac.digest(key, f"{kind}:{identifier}".encode(), "sha256").hex()
    return PREFIX[kind] + mac[:DIGEST_HEX]


class PersonIndex:
    """Every person seen (vault + this run), sorted by the ID number's int64 identity:
    pseudonym and county are looked up with a binary search, no hashing of strings."""

    def __init__(self, codes: np.ndarray, alias: pa.Array) -> None:
        order = np.argsort(codes, kind="stable")
        self.codes = codes[order]
        self.alias = alias.take(pa.array(order))
        self.county = pa.nulls(len(codes), pa.string())

    def positions(self, codes: np.ndarray) -> np.ndarray:
        """Index of each code (-1 when unknown or the code is -1)."""
        if not len(self.codes):
            return np.full(len(codes), -1, dtype=np.int64)
        at = np.searchsorted(self.codes, codes)
        clipped = np.minimum(at, len(self.codes) - 1)
        found = (self.codes[clipped] == codes) & (codes >= 0)
        return np.where(found, clipped, -1)

    def add(self, codes: np.ndarray, alias: pa.Array) -> None:
        merged = np.concatenate([self.codes, codes])
        order = np.argsort(merged, kind="stable")
        take = pa.array(order)
        self.codes = merged[order]
        self.alias = pa.concat_arrays([self.alias, alias]).take(take)
        self.county = pa.concat_arrays(
            [self.county, pa.nulls(len(codes), pa.string())]).take(take)

    def lookup(self, values: pa.Array, positions: np.ndarray) -> pa.Array:
        """values[position] (null where position is -1)."""
        return values.take(pa.array(positions, mask=positions < 0))


class HouseholdIndex:
    """Every household seen (vault + this run): number, pseudonym and county, aligned."""

    def __init__(self, identifiers: pa.Array, alias: pa.Array) -> None:
        self.identifiers = identifiers
        self.alias = alias
        self.county = pa.nulls(len(identifiers), pa.string())

    def add(self, identifiers: pa.Array, alias: pa.Array) -> None:
        self.identifiers = pa.concat_arrays([self.identifiers, identifiers])
        self.alias = pa.concat_arrays([self.alias, alias])
        self.county = pa.concat_arrays([self.county, pa.nulls(len(alias), pa.string())])


class Pseudonymiser:
    """Pseudonyms for whole columns, vectorised. Identifiers seen before (the vault, or
    earlier in this run) are looked up; only new ones are HMAC'd, once each.

    `issued` collects the (pseudonym, identifier) pairs the vault does not hold yet.
    """

    def __init__(self, key: bytes, *, people: tuple[pa.Array, pa.Array] | None = None,
                 households: tuple[pa.Array, pa.Array] | None = None) -> None:
        self._key = key
        empty = (pa.array([], pa.string()), pa.array([], pa.string()))
        person_ids, person_keys = people or empty
        self.people = PersonIndex(id_codes(person_ids), person_keys)
        self.homes = HouseholdIndex(*(households or empty))
        self.issued: dict[str, list[tuple[str, str]]] = {"person": [], "household": []}

    def _issue(self, kind: str, identifiers: list[str]) -> list[str]:
        aliases = [pseudonym(self._key, kind, i) for i in identifiers]
        self.issued[kind] += list(zip(aliases, identifiers, strict=True))
        return aliases

    def persons(self, identifiers: pa.Array, codes: np.ndarray) -> tuple[pa.Array, np.ndarray]:
        """(pseudonyms, positions in `people`) for valid ID numbers (code -1: null)."""
        positions = self.people.positions(codes)
        new = (positions < 0) & (codes >= 0)
        if new.any():
            new_codes, first = np.unique(codes[new], return_index=True)
            rows = np.flatnonzero(new)[first]
            raw = identifiers.take(pa.array(rows)).to_pylist()
            self.people.add(new_codes, pa.array(self._issue("person", raw), pa.string()))
            positions = self.people.positions(codes)
        return self.people.lookup(self.people.alias, positions), positions

    def households(self, identifiers: pa.Array) -> tuple[pa.Array, pa.Array]:
        """(pseudonyms, positions in `homes`) for household numbers (nulls stay null)."""
        homes = self.homes
        index = pc.index_in(identifiers, value_set=homes.identifiers)
        new = pc.unique(identifiers.filter(pc.and_(pc.is_null(index),
                                                   pc.is_valid(identifiers))))
        if len(new):
            aliases = self._issue("household", new.to_pylist())
            homes.add(new, pa.array(aliases, pa.string()))
            index = pc.index_in(identifiers, value_set=homes.identifiers)
        return pc.take(homes.alias, index), index

    def take_issued(self) -> dict[str, list[tuple[str, str]]]:
        issued, self.issued = self.issued, {"person": [], "household": []}
        return issued
