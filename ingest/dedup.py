"""Exact duplicate rows: a 64-bit hash per row, remembered per feed and reported month.

Two rows are exact duplicates when every contract column is equal after
normalisation (so the same row as GBK with Chinese terms and as UTF-8 with
codes is a duplicate). A duplicate has the same `reported_date`, hence the same
reported month: the index is kept per (feed, month), loaded only for months a
run touches, and stored beside the warehouse in
`<warehouse>/_rowhash/<feed>/reported_month=<YYYY-MM>/part-<run>.parquet`.
Collision odds: about n^2 / 2^65 for n rows in one feed-month (1e-8 at 1M rows).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

_HASH_SCHEMA = pa.schema([("row_hash", pa.uint64())])
_NULL = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _splitmix(x: np.ndarray) -> np.ndarray:
    x = x ^ (x >> np.uint64(30))
    x = x * _MIX1
    x = x ^ (x >> np.uint64(27))
    x = x * _MIX2
    return x ^ (x >> np.uint64(31))


def _column_hash(arr: pa.Array) -> np.ndarray:
    """A uint64 per value; strings hashed once per distinct value (siphash, stable)."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    valid = np.asarray(pc.is_valid(arr).to_numpy(zero_copy_only=False), dtype=bool)
    t = arr.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        encoded = pc.dictionary_encode(arr)
        distinct = pd.Series(encoded.dictionary.to_numpy(zero_copy_only=False), dtype=object)
        hashed = pd.util.hash_array(distinct.to_numpy(), categorize=False)
        indices = pc.fill_null(encoded.indices, 0).to_numpy(zero_copy_only=False)
        values = hashed[indices] if len(hashed) else np.zeros(len(arr), dtype=np.uint64)
    elif pa.types.is_boolean(t):
        values = pc.fill_null(arr, False).to_numpy(zero_copy_only=False).astype(np.uint64) + 1
    elif pa.types.is_floating(t):
        filled = pc.fill_null(arr, 0.0).to_numpy(zero_copy_only=False).astype(np.float64)
        values = (filled + 0.0).view(np.uint64)  # + 0.0 turns -0.0 into 0.0
    else:  # dates, ints
        if pa.types.is_date32(t):
            arr = arr.cast(pa.int32())
        values = pc.fill_null(arr.cast(pa.int64()), 0).to_numpy(zero_copy_only=False)
        values = values.astype(np.int64).view(np.uint64)
    return np.where(valid, _splitmix(values.astype(np.uint64)), _NULL)


def row_hashes(
    table: pa.Table, columns: list[str], *, exact: dict[str, np.ndarray] | None = None
) -> np.ndarray:
    """One uint64 per row over `columns` (order matters).

    `exact` gives columns whose values already have a stable injective uint64 form
    (ID numbers as numbers): those are mixed in directly.
    """
    exact = exact or {}
    h = np.full(table.num_rows, np.uint64(len(columns)), dtype=np.uint64)
    for position, name in enumerate(columns):
        salt = np.uint64(((position + 1) * int(_MIX2)) % (1 << 64))
        values = _splitmix(exact[name]) if name in exact else _column_hash(table[name])
        h = _splitmix(h ^ (values + salt))
    return h


def mix_in(hashes: np.ndarray, arr: pa.Array) -> np.ndarray:
    """`hashes` with an optional column mixed in where it holds a value (rows without one
    keep their hash, so rows stored before the column existed still match)."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    valid = np.asarray(pc.is_valid(arr).to_numpy(zero_copy_only=False), dtype=bool)
    if not valid.any():
        return hashes
    mixed = _splitmix(hashes ^ (_column_hash(arr) + _MIX1))
    return np.where(valid, mixed, hashes)


def month_text(month: int) -> str:
    """'YYYY-MM' of a month number (months since 1970-01)."""
    return str(np.datetime64(int(month), "M"))


class RowHashIndex:
    """Hashes of rows already in the warehouse (or earlier in this run), per month.

    Each month holds a few sorted chunks (looked up by binary search) that are merged
    when they multiply, so a batch costs O(rows x log) and never re-sorts everything.
    """

    MAX_CHUNKS = 8

    def __init__(self, root: Path, feed_name: str) -> None:
        self.root = root / "_rowhash" / feed_name
        self.feed_name = feed_name
        self._known: dict[int, list[np.ndarray]] = {}
        self.new: dict[int, list[np.ndarray]] = {}

    def _chunks(self, month: int) -> list[np.ndarray]:
        if month not in self._known:
            folder = self.root / f"reported_month={month_text(month)}"
            parts = [
                pq.read_table(p, schema=_HASH_SCHEMA).column(0).to_numpy()
                for p in sorted(folder.glob("*.parquet"))
            ] if folder.is_dir() else []
            self._known[month] = [np.sort(np.concatenate(parts))] if parts else []
        return self._known[month]

    def _seen(self, month: int, values: np.ndarray) -> np.ndarray:
        seen = np.zeros(len(values), dtype=bool)
        for chunk in self._chunks(month):
            if not len(chunk):
                continue
            at = np.minimum(np.searchsorted(chunk, values), len(chunk) - 1)
            seen |= chunk[at] == values
        return seen

    def first_sightings(self, hashes: np.ndarray, months: np.ndarray) -> np.ndarray:
        """Mask of rows seen neither before nor earlier in `hashes`; remembers them."""
        keep = np.zeros(len(hashes), dtype=bool)
        order = np.argsort(months, kind="stable")
        distinct, starts = np.unique(months[order], return_index=True)
        bounds = [*starts.tolist(), len(order)]
        for k, month in enumerate(distinct.tolist()):
            rows = order[bounds[k] : bounds[k + 1]]
            _, first = np.unique(hashes[rows], return_index=True)
            candidates = rows[first]
            candidates = candidates[~self._seen(month, hashes[candidates])]
            keep[candidates] = True
            added = np.sort(hashes[candidates])
            if not len(added):
                continue
            chunks = self._chunks(month)
            chunks.append(added)
            if len(chunks) > self.MAX_CHUNKS:
                self._known[month] = [np.sort(np.concatenate(chunks))]
            self.new.setdefault(month, []).append(added)
        return keep

    def staged_tables(self) -> dict[str, pa.Table]:
        """'YYYY-MM' -> the hashes first seen in this run, to store with the warehouse."""
        out = {}
        for month, chunks in self.new.items():
            added = np.concatenate(chunks) if chunks else np.empty(0, dtype=np.uint64)
            if len(added):
                out[month_text(month)] = pa.table({"row_hash": pa.array(added, pa.uint64())})
        return out
