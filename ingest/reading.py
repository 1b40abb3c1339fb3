"""Finding and streaming the raw extract: feeds, files, encodings, headers, batches.

Files are read batch by batch (pyarrow's streaming CSV reader, Parquet row
groups), never a whole feed at once. File-level problems raise `UserError`
naming the file and the problem, never a value from it.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, cast

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from doudi.contract import FEEDS, SENSITIVE_EXTRA_COLUMNS, Feed
from doudi.errors import UserError

DATA_SUFFIXES = (".csv", ".csv.gz", ".parquet")
CSV_BLOCK_BYTES = 16 << 20
PARQUET_BATCH_ROWS = 200_000
_CHUNK = 8 << 20


@dataclass(frozen=True)
class SourceFile:
    feed: str
    path: Path
    relative: str  # relative to RAW_DIR, posix style: what reports and quarantine name
    size: int

    @property
    def is_parquet(self) -> bool:
        return self.relative.lower().endswith(".parquet")

    @property
    def is_gzip(self) -> bool:
        return self.relative.lower().endswith(".gz")


@dataclass
class Discovery:
    files: list[SourceFile]
    missing_optional: list[str]
    ignored: list[str] = field(default_factory=list)  # paths RAW_DIR holds but no feed reads


@dataclass(frozen=True)
class Header:
    """How one file's columns map onto the contract."""

    encoding: str | None  # None for Parquet
    source_names: dict[str, str]  # canonical name -> the header as written in the file
    unknown: tuple[str, ...]

    @property
    def sensitive_unknown(self) -> tuple[str, ...]:
        return tuple(c for c in self.unknown if c in SENSITIVE_EXTRA_COLUMNS)


@dataclass
class RawBatch:
    """Contract columns of consecutive data rows; row numbers are 1-based, header not counted."""

    first_row: int
    columns: dict[str, pa.Array]
    num_rows: int


def _is_data_file(path: Path) -> bool:
    name = path.name.lower()
    return path.is_file() and not name.startswith(".") and name.endswith(DATA_SUFFIXES)


def discover(raw_dir: Path) -> Discovery:
    """Every data file of every feed; a missing required feed is an error."""
    if not raw_dir.is_dir():
        raise UserError(f"{raw_dir}: not a directory (expected one sub-folder per feed)")
    known = {f.name for f in FEEDS}
    files: list[SourceFile] = []
    missing_optional: list[str] = []
    ignored = sorted(
        p.name for p in raw_dir.iterdir() if p.name not in known and not p.name.startswith(".")
    )
    for spec in FEEDS:
        folder = raw_dir / spec.name
        found = sorted(p for p in folder.rglob("*") if _is_data_file(p)) if folder.is_dir() else []
        if folder.is_dir():
            ignored += sorted(
                p.relative_to(raw_dir).as_posix()
                for p in folder.rglob("*")
                if p.is_file() and not _is_data_file(p)
            )
        if not found:
            if spec.required:
                where = f"{folder}/ has no *.csv, *.csv.gz or *.parquet files" if folder.is_dir() \
                    else f"no {spec.name}/ folder in {raw_dir}"
                raise UserError(f"required feed '{spec.name}' is missing: {where}")
            missing_optional.append(spec.name)
            continue
        files += [
            SourceFile(spec.name, p, p.relative_to(raw_dir).as_posix(), p.stat().st_size)
            for p in found
        ]
    return Discovery(files, missing_optional, ignored)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _open_bytes(source: SourceFile) -> IO[bytes]:
    if source.is_gzip:
        return cast(IO[bytes], gzip.open(source.path, "rb"))
    return source.path.open("rb")


def _decodes(source: SourceFile, encoding: str) -> bool:
    decoder = codecs.getincrementaldecoder(encoding)()
    try:
        with _open_bytes(source) as fh:
            while chunk := fh.read(_CHUNK):
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    except (OSError, EOFError) as err:
        raise UserError(f"{source.relative}: unreadable file ({type(err).__name__})") from None
    return True


def detect_encoding(source: SourceFile) -> str:
    """BOM -> UTF-8; else UTF-8 if the whole file decodes; else GB18030 (a GBK superset)."""
    try:
        with _open_bytes(source) as fh:
            head = fh.read(3)
    except (OSError, EOFError) as err:
        raise UserError(f"{source.relative}: unreadable file ({type(err).__name__})") from None
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if _decodes(source, "utf-8"):
        return "utf-8"
    if _decodes(source, "gb18030"):
        return "gb18030"
    raise UserError(f"{source.relative}: undecodable text (neither UTF-8 nor GB18030/GBK)")


def _map_header(source: SourceFile, spec: Feed, names: list[str], encoding: str | None) -> Header:
    lookup = spec.header_lookup()
    written: dict[str, str] = {}
    unknown: list[str] = []
    for raw_name in names:
        name = raw_name.strip().lstrip("\ufeff")
        canonical = lookup.get(name)
        if canonical is None:
            unknown.append(name)
            continue
        if canonical in written:
            raise UserError(
                f"{source.relative}: column '{canonical}' appears twice "
                f"(as '{written[canonical]}' and '{raw_name}')"
            )
        written[canonical] = raw_name
    missing = [c for c in spec.columns if not c.nullable and c.name not in written]
    if missing:
        listed = ", ".join(f"'{c.name}' ({c.alias})" for c in missing)
        raise UserError(f"{source.relative}: missing required column(s) {listed}")
    return Header(encoding, written, tuple(unknown))


def read_header(source: SourceFile, spec: Feed) -> Header:
    """Map the file's columns to the contract (decoding CSV headers as detected)."""
    if source.is_parquet:
        try:
            names = pq.read_schema(source.path).names
        except (OSError, pa.ArrowException) as err:
            raise UserError(
                f"{source.relative}: unreadable Parquet file ({type(err).__name__})"
            ) from None
        return _map_header(source, spec, names, None)
    encoding = detect_encoding(source)
    with _open_bytes(source) as fh:
        first_line = fh.readline()
    if not first_line.strip():
        raise UserError(f"{source.relative}: empty file (no header row)")
    line = first_line.decode(encoding).rstrip("\r\n")
    names = next(csv.reader([line]))
    return _map_header(source, spec, names, encoding)


def iter_batches(source: SourceFile, header: Header) -> Iterator[RawBatch]:
    """Contract columns of the file, batch by batch, as written (strings for CSV)."""
    if source.is_parquet:
        yield from _parquet_batches(source, header)
    else:
        yield from _csv_batches(source, header)


def _parquet_batches(source: SourceFile, header: Header) -> Iterator[RawBatch]:
    wanted = list(header.source_names.values())
    first = 1
    try:
        reader = pq.ParquetFile(source.path)
        for batch in reader.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=wanted):
            cols = {c: batch.column(w) for c, w in header.source_names.items()}
            yield RawBatch(first, cols, batch.num_rows)
            first += batch.num_rows
    except (OSError, pa.ArrowException) as err:
        raise UserError(f"{source.relative}: unreadable Parquet file ({type(err).__name__})") \
            from None


def _csv_batches(source: SourceFile, header: Header) -> Iterator[RawBatch]:
    assert header.encoding is not None
    with _open_bytes(source) as fh:
        all_names = next(csv.reader([fh.readline().decode(header.encoding).rstrip("\r\n")]))
    # unique internal names, so repeated unknown headers cannot confuse the reader
    internal = [f"c{i}" for i in range(len(all_names))]
    by_written = {w: i for i, w in enumerate(all_names)}
    wanted = {c: internal[by_written[w]] for c, w in header.source_names.items()}
    shape_problem: list[str] = []

    def on_bad_row(row: pacsv.InvalidRow) -> str:
        # remember the shape only: the row's text may hold personal identifiers
        where = f"data row {row.number - 1}" if row.number is not None else "a data row"
        shape_problem.append(
            f"{where} has {row.actual_columns} fields, expected {row.expected_columns}"
        )
        return "error"

    read_options = pacsv.ReadOptions(
        column_names=internal,
        skip_rows=1,
        block_size=CSV_BLOCK_BYTES,
        encoding="utf8" if header.encoding in ("utf-8", "utf-8-sig") else header.encoding,
    )
    parse_options = pacsv.ParseOptions(invalid_row_handler=on_bad_row)
    convert_options = pacsv.ConvertOptions(
        column_types={name: pa.string() for name in wanted.values()},
        include_columns=list(wanted.values()),
        null_values=[""],
        strings_can_be_null=True,
        quoted_strings_can_be_null=True,
    )
    first = 1
    compression = "gzip" if source.is_gzip else None
    try:
        with pa.input_stream(str(source.path), compression=compression) as stream:
            reader = pacsv.open_csv(
                stream,
                read_options=read_options,
                parse_options=parse_options,
                convert_options=convert_options,
            )
            for batch in reader:
                cols = {c: batch.column(i) for c, i in wanted.items()}
                yield RawBatch(first, cols, batch.num_rows)
                first += batch.num_rows
    except (pa.ArrowException, UnicodeDecodeError, OSError) as err:
        if shape_problem:
            raise UserError(f"{source.relative}: malformed CSV: {shape_problem[0]}") from None
        raise UserError(
            f"{source.relative}: unreadable CSV ({type(err).__name__}; check encoding, "
            "quoting and the number of fields per row)"
        ) from None
