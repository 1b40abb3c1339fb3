"""Every file style the contract allows lands as the same warehouse rows."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pyarrow as pa
import pytest

import ingest
from doudi.contract import Kind, feed
from tests.ingest.ingest_world import (
    Row,
    delivery,
    plain,
    plains,
    quarantined,
    readable_contents,
    warehouse_table,
    workspace,
    write_csv,
    write_parquet,
)


def _in_chinese(feed_name: str, rows: list[Row]) -> list[Row]:
    """Enum codes replaced by the contract's Chinese terms, booleans by 是/否."""
    spec = feed(feed_name)
    out = []
    for row in rows:
        new = dict(row)
        for col in spec.columns:
            value = row.get(col.name, "")
            if col.kind is Kind.ENUM and col.enum and col.enum.get(value):
                new[col.name] = col.enum[value] or value
            elif col.kind is Kind.ENUM_LIST and col.enum and value:
                new[col.name] = ";".join(col.enum[v] or v for v in value.split(";"))
            elif col.kind is Kind.BOOL and value:
                new[col.name] = {"true": "是", "false": "否"}[value]
        out.append(new)
    return out


def _native(feed_name: str, rows: list[Row]) -> pa.Table:
    """Rows as Parquet with native dates, numbers and booleans."""
    spec = feed(feed_name)
    columns = {}
    for col in spec.columns:
        texts = [r.get(col.name) or None for r in rows]
        if col.kind is Kind.DATE:
            columns[col.name] = pa.array([date.fromisoformat(t) if t else None for t in texts])
        elif col.kind is Kind.INT:
            columns[col.name] = pa.array([int(t) if t else None for t in texts], pa.int64())
        elif col.kind in (Kind.MONEY, Kind.FLOAT):
            columns[col.name] = pa.array([float(t) if t else None for t in texts], pa.float64())
        elif col.kind is Kind.BOOL:
            columns[col.name] = pa.array([t == "true" if t else None for t in texts])
        else:
            columns[col.name] = pa.array(texts, pa.string())
    return pa.table(columns)


STYLES = ["utf8", "bom", "gbk_chinese", "gz", "parquet_strings", "parquet_native"]


def _write(raw: Path, style: str) -> None:
    for name, rows in delivery().items():
        base = raw / name / f"{name}-2024-01"
        if style == "utf8":
            write_csv(base.with_suffix(".csv"), name, rows)
        elif style == "bom":
            write_csv(base.with_suffix(".csv"), name, rows, encoding="utf-8-sig")
        elif style == "gbk_chinese":
            write_csv(base.with_suffix(".csv"), name, _in_chinese(name, rows), encoding="gbk",
                      chinese=True)
        elif style == "gz":
            write_csv(raw / name / f"{name}-2024-01.csv.gz", name, rows, gz=True)
        elif style == "parquet_strings":
            write_parquet(base.with_suffix(".parquet"), name, rows)
        else:
            write_parquet(base.with_suffix(".parquet"), name, _native(name, rows))


def _tables(settings: object) -> dict[str, list[dict[str, object]]]:
    out = {}
    for name in delivery():
        table = warehouse_table(settings, name).sort_by("source_row")  # type: ignore[arg-type]
        out[name] = table.drop_columns(["source_file"]).to_pylist()
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, object]]]:
    tmp = tmp_path_factory.mktemp("reference")
    _write(tmp / "raw", "utf8")
    settings = workspace(tmp)
    ingest.ingest(tmp / "raw", settings)
    return _tables(settings)


@pytest.mark.parametrize("style", STYLES[1:])
def test_every_style_ingests_to_identical_tables(
    tmp_path: Path, style: str, reference: dict[str, list[dict[str, object]]]
) -> None:
    _write(tmp_path / "raw", style)
    settings = workspace(tmp_path)
    ingest.ingest(tmp_path / "raw", settings)
    tables = _tables(settings)
    for name, rows in reference.items():
        mine = tables[name]
        assert len(mine) == len(rows)
        for a, b in zip(mine, rows, strict=True):
            # keys differ (each workspace has its own secret key); everything else is equal
            assert {k: v for k, v in a.items() if not k.endswith("_key")} == {
                k: v for k, v in b.items() if not k.endswith("_key")}
    assert quarantined(settings) == set()


def test_shared_key_file_gives_identical_pseudonyms(tmp_path: Path) -> None:
    """GBK + Chinese headers and UTF-8 + English headers: the very same rows, keys included."""
    key = tmp_path / "shared.key"
    tables = []
    for style in ("utf8", "gbk_chinese"):
        _write(tmp_path / style, style)
        settings = workspace(tmp_path, f"ws-{style}").model_copy(
            update={"pseudonym_key_file": key})
        ingest.ingest(tmp_path / style, settings)
        tables.append(_tables(settings))
    assert tables[0] == tables[1]


def test_a_feed_split_over_mixed_files_and_headers(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    rows = delivery()
    for name in ("households", "monitoring_events", "medical"):
        write_csv(raw / name / f"{name}.csv", name, rows[name])
    persons = rows["persons"]
    write_csv(raw / "persons" / "a.csv", "persons", persons[:2], chinese=True, encoding="gb18030")
    write_parquet(raw / "persons" / "b.parquet", "persons", _native("persons", persons[2:4]))
    write_csv(raw / "persons" / "more" / "c.csv.gz", "persons", persons[4:], gz=True)
    settings = workspace(tmp_path)

    report = ingest.ingest(raw, settings)

    table = warehouse_table(settings, "persons")
    assert table.num_rows == 6
    assert sorted(set(plains(table["source_file"].to_pylist()))) == [
        "persons/a.csv", "persons/b.parquet", "persons/more/c.csv.gz"]
    assert {plain(f.file): f.encoding for f in report.files if f.feed == "persons"} == {
        "persons/a.csv": "gb18030", "persons/b.parquet": None, "persons/more/c.csv.gz": "utf-8"}


def test_unknown_columns_are_reported_by_name_and_never_stored(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    rows = delivery()
    for name in ("medical", "monitoring_events"):
        write_csv(raw / name / f"{name}.csv", name, rows[name])
    # a name in households and a phone in persons: not columns of those feeds
    write_csv(raw / "households" / "h.csv", "households", rows["households"],
              extra={"姓名": ["张三", "李四", "王五"]})
    write_csv(raw / "persons" / "p.csv", "persons", rows["persons"],
              extra={"联系电话": ["13912345678"] * 6, "remark": ["x"] * 6})
    settings = workspace(tmp_path)

    report = ingest.ingest(raw, settings)

    assert {(plain(u.file), u.column, u.sensitive) for u in report.unknown_columns} == {
        ("households/h.csv", "姓名", True), ("persons/p.csv", "联系电话", True),
        ("persons/p.csv", "remark", False)}
    everything = readable_contents(settings.home)
    for secret in ("13912345678", "张三", "李四"):
        assert secret not in everything
    assert "households: 姓名 [sensitive: values never read] in 1 file(s)" in report.to_text()
