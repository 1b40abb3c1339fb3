"""Fixtures of the generator tests: the small world read back once per session."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tests.province.extract_reader import (
    FeedFile,
    Listed,
    clean_frames,
    load_bad_rows,
    load_pending_rows,
    load_warning_rows,
    read_raw,
)

Extract = tuple[list[FeedFile], Listed, dict[str, pd.DataFrame]]


@pytest.fixture(scope="session")
def small_extract(small_world: Path) -> Extract:
    """(files read back, listed bad rows, clean rows per feed) of `small_world`.

    Clean rows leave out the listed warning and pending rows too: planted copies."""
    files = read_raw(small_world / "raw")
    truth = small_world / "truth"
    bad = load_bad_rows(truth)
    planted = bad | load_warning_rows(truth) | load_pending_rows(truth)
    return files, bad, clean_frames(files, planted)
