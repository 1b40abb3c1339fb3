"""Finding and streaming the raw extract: feeds, files, encodings, headers, batches.

Files are read batch by batch (pyarrow's streaming CSV reader, Parquet row
groups), never a whole feed at once. File-level problems raise `UserError`
naming the file and the problem, never a value from it.
"""

from __future__ import annotations

import codecs
import csv
import difflib
import gzip
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, cast

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from doudi.contract import FEED_NAMES, FEEDS, SENSITIVE_EXTRA_COLUMNS, Feed
from doudi.errors import UserError
from ingest.names import file_ref, printable, safe_label, safe_name, safe_part

DATA_SUFFIXES = (".csv", ".csv.gz", ".parquet")
HEADER_LIMIT = 64 << 10  # bytes of a CSV header row: longer is not a header
CSV_BLOCK_BYTES = 16 << 20
PARQUET_BATCH_ROWS = 200_000
_CHUNK = 8 << 20


@dataclass(frozen=True)
class SourceFile:
    feed: str
    path: Path  # the file itself (a symbolic link inside RAW_DIR: its target)
    relative: str  # relative to RAW_DIR, posix style, as named there: never printed or stored
    size: int
    sha256: str = ""  # set once the file has been hashed

    @property
    def ref(self) -> str:
        """What reports, quarantine, warehouse and messages name it (`ingest.names`)."""
        return file_ref(self.relative, self.sha256)

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
    # entries RAW_DIR holds that are neither a feed folder nor a data file, each with
    # what is wrong and the closest name ("medcal/: not a feed; did you mean medical/?")
    unknown: list[str] = field(default_factory=list)
    hidden: list[str] = field(default_factory=list)  # .DS_Store, Thumbs.db, ...: not read
    links: list[str] = field(default_factory=list)  # symbolic links inside RAW_DIR: followed


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


# Files operating systems and editors leave behind; never data, so listed but not errors.
SYSTEM_FILES = frozenset({"thumbs.db", "desktop.ini"})


def is_hidden(name: str) -> bool:
    """A hidden or system entry (`.DS_Store`, `._x.csv`, `.~lock.x.csv#`, `Thumbs.db`)."""
    return name.startswith(".") or name.lower() in SYSTEM_FILES


def is_data_file(name: str) -> bool:
    return name.lower().endswith(DATA_SUFFIXES) and not is_hidden(name)


def _closest(word: str, choices: list[str]) -> str | None:
    found = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return found[0] if found else None


def not_a_feed(name: str, is_dir: bool) -> str:
    """Why a top-level entry is not read, with the closest feed name (the name made safe:
    `ingest.names`)."""
    feeds = list(FEED_NAMES)
    shown = safe_part(name)
    if is_dir:
        near = _closest(name.lower(), feeds)
        hint = f"; did you mean {near}/?" if near else f" (feeds: {', '.join(feeds)})"
        return f"{shown}/: not a feed{hint}"
    stem = name.split(".", 1)[0].lower()
    near = _closest(stem, feeds)
    hint = f"; did you mean to put it in {near}/?" if near else ""
    return f"{shown}: a file outside the feed folders{hint}"


def not_a_data_file(relative: str) -> str:
    """Why a file inside a feed folder is not read, with the closest data suffix."""
    suffixes = [s.lower() for s in PurePosixPath(relative).suffixes]
    tails = ["".join(suffixes[i:]) for i in range(len(suffixes))]
    near = None
    for tail in reversed(tails):  # the shortest tail first: `.cvs` before `.2024.cvs`
        near = near or _closest(tail, list(DATA_SUFFIXES))
    kinds = ", ".join(f"*{s}" for s in DATA_SUFFIXES)
    hint = f"; did you mean {near}?" if near else ""
    return f"{safe_name(relative)}: not a data file ({kinds}){hint}"


def _inside(target: Path, raw_dir: Path) -> bool:
    return target == raw_dir or target.is_relative_to(raw_dir)


@dataclass
class _Walk:
    """Discovery's state: what was found, listed, and which real folders were entered."""

    raw_dir: Path
    unknown: list[str] = field(default_factory=list)
    hidden: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)

    def link_target(self, path: Path, relative: str, is_dir_hint: bool) -> Path | None:
        """Where a symbolic link leads, if it may be followed; else it is listed and None.

        Policy: a link whose target (every link resolved) lies inside RAW_DIR is followed
        and listed; one leading outside is refused (never followed); a broken one listed.
        """
        shown = safe_name(relative) + ("/" if is_dir_hint else "")
        target = Path(os.path.realpath(path))
        if not target.exists():
            self.unknown.append(f"{shown}: broken symbolic link (not read)")
            return None
        if not _inside(target, self.raw_dir):
            self.unknown.append(
                f"{shown}: symbolic link to a place outside RAW_DIR (refused, not followed; "
                "copy the data into RAW_DIR)")
            return None
        if target.is_dir() and Path(os.path.realpath(path.parent)).is_relative_to(target):
            self.unknown.append(f"{shown}: a symbolic link loop (to a folder that holds it; "
                                "not read again)")
            return None
        into = target.relative_to(self.raw_dir).as_posix() if target != self.raw_dir else "."
        self.links.append(f"{shown} -> {safe_name(into)}")
        return target

    def folder(self, folder: Path, relative: str, found: list[tuple[Path, str]],
               above: frozenset[Path] = frozenset()) -> None:
        """Every data file under `folder` (named `relative` from RAW_DIR), depth first;
        `above`: the real folders on the way down (a link back to one is a loop)."""
        real = Path(os.path.realpath(folder))
        if real in above or real == self.raw_dir:
            self.unknown.append(f"{safe_name(relative)}/: a symbolic link loop (a folder "
                                "that holds itself; not read again)")
            return
        above = above | {real}
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as err:
            raise UserError(f"{safe_name(relative)}/: unreadable folder "
                            f"({type(err).__name__})") from None
        for entry in entries:
            rel = f"{relative}/{entry.name}"
            path = Path(entry.path)
            if is_hidden(entry.name):  # never descended into or read: listed once
                self.hidden.append(safe_name(rel) + ("/" if entry.is_dir() else ""))
                continue
            if entry.is_symlink():
                target = self.link_target(path, rel, entry.is_dir())
                if target is None:
                    continue
                path = target
            if path.is_dir():
                self.folder(path, rel, found, above)
            elif not is_data_file(entry.name):
                self.unknown.append(not_a_data_file(rel))
            elif not path.is_file():
                self.unknown.append(f"{safe_name(rel)}: not a regular file (a device, pipe or "
                                    "socket; not read)")
            else:
                found.append((path, rel))


def discover(raw_dir: Path, *, allow_unknown: bool = False) -> Discovery:
    """Every data file of every feed; a missing required feed is an error, and so is
    anything else in `raw_dir` (unless `allow_unknown`: then it is listed).

    Symbolic links inside `raw_dir` are followed (and listed); links leading outside it
    and broken links are never followed: they are unknown entries. `raw_dir` must be
    absolute and resolved."""
    if not raw_dir.is_dir():
        raise UserError(f"{printable(str(raw_dir))}: not a directory (expected one sub-folder "
                        "per feed)")
    known = set(FEED_NAMES)
    walk = _Walk(raw_dir)
    feed_folders: dict[str, Path] = {}
    files: list[SourceFile] = []
    missing_optional: list[str] = []
    missing_required: list[str] = []
    for entry in sorted(raw_dir.iterdir()):
        name = entry.name
        if is_hidden(name):
            walk.hidden.append(safe_part(name) + ("/" if entry.is_dir() else ""))
            continue
        path = entry
        if entry.is_symlink():
            target = walk.link_target(entry, name, entry.is_dir())
            if target is None:
                continue
            path = target
        if name in known and path.is_dir():
            feed_folders[name] = path
        else:
            walk.unknown.append(not_a_feed(name, path.is_dir()))
    for spec in FEEDS:
        found: list[tuple[Path, str]] = []
        folder = feed_folders.get(spec.name)
        if folder is not None:
            walk.folder(folder, spec.name, found)
        if not found:
            if spec.required:
                where = (f"{spec.name}/ has no *.csv, *.csv.gz or *.parquet files"
                         if folder is not None else f"no {spec.name}/ folder in RAW_DIR")
                missing_required.append(f"required feed '{spec.name}' is missing: {where}")
            else:
                missing_optional.append(spec.name)
            continue
        files += [SourceFile(spec.name, p, rel, _size(p, rel)) for p, rel in found]
    unknown = walk.unknown
    listing = (f"{len(unknown)} unknown entr{'y' if len(unknown) == 1 else 'ies'}: "
               + "; ".join(unknown))
    if missing_required:  # with the unknown entries: `person/` explains a missing persons/
        raise UserError(missing_required[0] + (f" ({listing})" if unknown else ""))
    if unknown and not allow_unknown:
        raise UserError(
            f"{printable(str(raw_dir))}: {listing} (move or rename them, or pass "
            "--allow-unknown to read the feeds anyway and list them in the report)"
        )
    return Discovery(files, missing_optional, unknown, sorted(walk.hidden), walk.links)


def _size(path: Path, relative: str) -> int:
    try:
        return path.stat().st_size
    except OSError as err:
        raise UserError(f"{safe_name(relative)}: unreadable file ({type(err).__name__})") \
            from None


def sha256_of(source: SourceFile) -> str:
    """The file's sha256 (hex); an unreadable file is a UserError naming it."""
    digest = hashlib.sha256()
    try:
        with source.path.open("rb") as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
    except OSError as err:
        raise UserError(f"{safe_name(source.relative)}: unreadable file "
                        f"({type(err).__name__})") from None
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
        raise UserError(f"{source.ref}: unreadable file ({type(err).__name__})") from None
    return True


def detect_encoding(source: SourceFile) -> str:
    """BOM -> UTF-8; else UTF-8 if the whole file decodes; else GB18030 (a GBK superset)."""
    try:
        with _open_bytes(source) as fh:
            head = fh.read(3)
    except (OSError, EOFError) as err:
        raise UserError(f"{source.ref}: unreadable file ({type(err).__name__})") from None
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if _decodes(source, "utf-8"):
        return "utf-8"
    if _decodes(source, "gb18030"):
        return "gb18030"
    raise UserError(f"{source.ref}: undecodable text (neither UTF-8 nor GB18030/GBK)")


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
                f"{source.ref}: column '{canonical}' appears twice "
                f"(as '{safe_label(written[canonical])}' and '{safe_label(raw_name)}')"
            )
        written[canonical] = raw_name
    missing = [c for c in spec.columns if not c.nullable and c.name not in written]
    if missing:
        listed = ", ".join(f"'{c.name}' ({c.alias})" for c in missing)
        raise UserError(f"{source.ref}: missing required column(s) {listed}")
    return Header(encoding, written, tuple(unknown))


def read_header(source: SourceFile, spec: Feed) -> Header:
    """Map the file's columns to the contract (decoding CSV headers as detected)."""
    if source.is_parquet:
        try:
            names = pq.read_schema(source.path).names
        except (OSError, pa.ArrowException) as err:
            raise UserError(
                f"{source.ref}: unreadable Parquet file ({type(err).__name__})"
            ) from None
        return _map_header(source, spec, names, None)
    encoding = detect_encoding(source)
    line, _ = _header_line(source, encoding)
    if not line.strip():
        raise UserError(f"{source.ref}: empty file (no header row)")
    return _map_header(source, spec, next(csv.reader([line])), encoding)


def _header_line(source: SourceFile, encoding: str) -> tuple[str, bool]:
    """The header row as text, and whether data rows may follow it (a header without a
    line break ends the file: a delivery with no rows). A header row longer than
    HEADER_LIMIT bytes is a file-level error, not a header."""
    with _open_bytes(source) as fh:
        raw = fh.readline(HEADER_LIMIT + 1)
    if len(raw) > HEADER_LIMIT:
        raise UserError(f"{source.ref}: the header row is longer than {HEADER_LIMIT:,} bytes "
                        "(not a header: check the file's first line)")
    return raw.decode(encoding).rstrip("\r\n"), raw.endswith((b"\n", b"\r"))


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
        raise UserError(f"{source.ref}: unreadable Parquet file ({type(err).__name__})") \
            from None


def _csv_batches(source: SourceFile, header: Header) -> Iterator[RawBatch]:
    assert header.encoding is not None
    line, rows_follow = _header_line(source, header.encoding)
    if not rows_follow:  # only a header, without a final line break: an empty delivery
        return
    all_names = next(csv.reader([line]))
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
    # a quoted line break is one value holding a control character (a row-level data
    # error), not the end of the row
    parse_options = pacsv.ParseOptions(invalid_row_handler=on_bad_row, newlines_in_values=True)
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
            raise UserError(f"{source.ref}: malformed CSV: {shape_problem[0]}") from None
        raise UserError(
            f"{source.ref}: unreadable CSV ({type(err).__name__}; check encoding, "
            "quoting and the number of fields per row)"
        ) from None
