"""Shared fixtures. `small_world`: one small synthetic province per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Fixture modules that test modules both import and load as plugins: rewrite their asserts.
pytest.register_assert_rewrite("tests.serving.store_fixtures")

# one thread per numeric library: the machine is shared and tests run with -n 2
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

SMALL_WORLD = {"households": 300, "months": 30, "start": "2023-01", "seed": 11}


@pytest.fixture(scope="session")
def small_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ~300-household, 30-month province (start 2023-01, seed 11): returns its folder.

    `<dir>/raw/<feed>/...` holds the extracts, `<dir>/truth/...` the ground truth.
    """
    from doudi.settings import Settings
    from province import simulate

    out = tmp_path_factory.mktemp("small_world")
    simulate(out, settings=Settings(), **SMALL_WORLD)
    return out
