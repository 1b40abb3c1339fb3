"""`serving`'s public names: each from its home module, none loaded before it is asked for."""

from __future__ import annotations

import subprocess
import sys
from importlib import import_module
from pathlib import Path

import pytest

import serving

ROOT = Path(__file__).resolve().parents[2]
HEAVY = {"pandas", "numpy", "lightgbm", "sqlalchemy", "bentoml", "mlflow", "pyarrow"}


def test_importing_serving_loads_no_data_stack() -> None:
    code = f"import sys, serving; print(sorted(set({sorted(HEAVY)!r}) & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, check=True)
    assert done.stdout.strip() == "[]", done.stdout


def test_every_public_name_is_its_home_modules_object() -> None:
    assert set(serving.__all__) == set(serving._HOMES)
    for name, home in serving._HOMES.items():
        assert getattr(serving, name) is getattr(import_module(home), name), name
    assert set(serving.__all__) <= set(dir(serving))


def test_unknown_names_and_submodules() -> None:
    with pytest.raises(AttributeError, match="no attribute 'scoer_month'"):
        serving.scoer_month  # noqa: B018
    from serving import routing  # a submodule, not a public name: imported as ever

    assert routing.__name__ == "serving.routing"
