"""doudi.contract must say exactly what ../shared/DATA_CONTRACT.md says."""

import re
from pathlib import Path

import pytest

from doudi import contract_doc
from doudi.contract import FEED_NAMES, REQUIRED_FEEDS, Kind, feed

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
        assert [r[0] for r in rows] == list(spec.column_names), name
        assert [r[1] for r in rows] == [c.alias for c in spec.columns], name
        for (col, _, typ, _), c in zip(rows, spec.columns, strict=True):
            assert typ.endswith("?") == c.nullable, (name, col)


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
