"""doudi.contract must say exactly what ../shared/DATA_CONTRACT.md says."""

import re
from pathlib import Path

import pytest

from doudi import contract_doc
from doudi.contract import (
    DIVISION_CODE_PATTERN,
    FEED_NAMES,
    FEEDS,
    HOUSEHOLD_ID_PATTERN,
    REQUIRED_FEEDS,
    Kind,
    feed,
)

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "DATA_CONTRACT.md"


def _shared_tables() -> dict[str, list[tuple[str, str, str, str]]]:
    """feed name -> rows (column, alias, type, meaning) parsed from the shared contract."""
    text = SHARED.read_text(encoding="utf-8")
    feeds: dict[str, list[tuple[str, str, str, str]]] = {}
    current = None
    for line in text.splitlines():
        m = re.match(r"^### (\w+) \(", line)
        if m:
            current = m.group(1)
            feeds[current] = []
            continue
        is_row = line.startswith("| ") and not line.startswith("| column") and "---" not in line
        if current and is_row:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            feeds[current].append((cells[0], cells[1], cells[2], cells[3]))
    return feeds


needs_shared = pytest.mark.skipif(not SHARED.exists(), reason=f"{SHARED} not present")


@needs_shared
def test_same_feeds_columns_and_aliases() -> None:
    tables = _shared_tables()
    assert set(tables) == set(FEED_NAMES)
    for name, rows in tables.items():
        spec = feed(name)
        assert [r[0] for r in rows] == [c.name for c in spec.contract_columns], name
        assert [r[1] for r in rows] == [c.alias for c in spec.contract_columns], name
        for (col, _, typ, _), c in zip(rows, spec.contract_columns, strict=True):
            assert typ.endswith("?") == c.nullable, (name, col)


@needs_shared
def test_vault_only_columns_are_the_ones_the_contract_keeps_in_the_vault() -> None:
    marked = {(name, row[0]) for name, rows in _shared_tables().items() for row in rows
              if "identity vault" in row[3]}
    assert marked == {("persons", "name"), ("households", "contact_phone")}
    for name, col in marked:
        spec = feed(name)
        assert spec.column(col).vault_only and spec.column(col).sensitive
        assert col not in spec.column_names  # never a warehouse column
        assert col in spec.header_lookup() and spec.column(col).alias in spec.header_lookup()


def test_stated_limits_are_the_only_limits() -> None:
    """Ranges and shapes the contract states, and no others (issue #10)."""
    limits = {(f.name, c.name): (c.min_value, c.max_value) for f in FEEDS
              for c in f.contract_columns if c.min_value is not None or c.max_value is not None}
    assert limits == {("medical", "inpatient_days"): (0, None), ("disability", "grade"): (1, 4)}
    patterns = {(f.name, c.name): c.pattern for f in FEEDS for c in f.contract_columns
                if c.pattern}
    assert set(patterns.values()) == {HOUSEHOLD_ID_PATTERN, DIVISION_CODE_PATTERN}
    assert {k for k, v in patterns.items() if v == DIVISION_CODE_PATTERN} == {
        ("divisions", "code")}
    assert {k[1] for k, v in patterns.items() if v == HOUSEHOLD_ID_PATTERN} == {"household_id"}
    assert all(f.column("household_id").pattern == HOUSEHOLD_ID_PATTERN
               for f in FEEDS if "household_id" in f.column_names)


@needs_shared
def test_required_feeds_match() -> None:
    text = SHARED.read_text(encoding="utf-8")
    required = set(re.findall(r"^### (\w+) \(.*- required$", text, flags=re.M))
    assert required == set(REQUIRED_FEEDS)


@needs_shared
def test_enum_codes_and_chinese_terms_match() -> None:
    for name, rows in _shared_tables().items():
        for col, _, _typ, meaning in rows:
            c = feed(name).column(col)
            if c.kind not in (Kind.ENUM, Kind.ENUM_LIST):
                continue
            # `code`, then maybe its Chinese term before the next code:
            # "`migrant` 外出务工", "`D` dangerous (危房)"
            pieces = re.split(r"`([A-Za-z_]+)`", meaning)[1:]
            codes = pieces[0::2]
            terms = [re.search(r"[\u4e00-\u9fff]+", t) for t in pieces[1::2]]
            assert c.enum is not None
            assert codes == list(c.enum), (name, col)
            found = {k: (t.group(0) if t else None) for k, t in zip(codes, terms, strict=True)}
            assert found == c.enum, (name, col)


@needs_shared
def test_record_keys_match() -> None:
    text = SHARED.read_text(encoding="utf-8")
    blocks = re.split(r"^### ", text, flags=re.M)[1:]
    for block in blocks:
        name = block.split(" ", 1)[0]
        key_line = re.search(r"^Key: (.+?)\.", block, flags=re.M)
        assert key_line, name
        keys = tuple(re.findall(r"`(\w+)`", key_line.group(1).split(" (")[0]))
        assert keys == feed(name).key, name


def test_docs_are_generated_from_the_contract() -> None:
    text = contract_doc.DOC.read_text(encoding="utf-8")
    assert contract_doc.updated(text) == text, "run: python -m doudi.contract_doc"


def test_unknown_feed_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="households"):
        feed("nonsense")
