"""Fixtures of the generator tests: the small world read back once per session."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tests.province.extract_reader import FeedFile, clean_frames, load_bad_rows, read_raw

Extract = tuple[list[FeedFile], set[tuple[str, str, int, str, str]], dict[str, pd.DataFrame]]


@pytest.fixture(scope="session")
def small_extract(small_world: Path) -> Extract:
    """(files read back, listed bad rows, clean rows per feed) of `small_world`."""
    files = read_raw(small_world / "raw")
    bad = load_bad_rows(small_world / "truth")
    return files, bad, clean_frames(files, bad)
