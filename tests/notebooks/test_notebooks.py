"""The analyst's notebooks (notebooks/, docs/notebooks.md): stored without outputs, and each
executes headless on the shared monthly workspace of tests/serving/test_api.py with the
project's Python, no error, every figure drawn and no missing Chinese glyph."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest

from doudi.settings import Settings
from monitoring import notebook_data
from tests.serving.test_api import (  # the shared monthly workspace (built once per run)
    AS_OF,
    settings,  # noqa: F401  (the fixture)
)

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
NAMES = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
CELL_TIMEOUT_S = 180
# matplotlib's warning for a character its fonts cannot draw (a box in the figure)
MISSING_GLYPH = re.compile(r"missing from font|Glyph \d+", re.IGNORECASE)
# figures each notebook draws on the small workspace (one version: no comparison plot)
FIGURES = {"01_data.ipynb": 4, "02_model.ipynb": 5, "03_explanations.ipynb": 5}


def test_the_three_notebooks_are_there() -> None:
    assert sorted(FIGURES) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_stored_without_outputs(name: str) -> None:
    """A committed notebook carries no outputs (no household's data in the repository)."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
             and (cell.get("outputs") or cell.get("execution_count") is not None)]
    assert not dirty, f"{name}: cells {dirty} have outputs or execution counts: strip them"
    assert nb.metadata["kernelspec"]["name"] == "python3"


def _execute(name: str, workspace: Settings, tmp_path: Path,
             monkeypatch: pytest.MonkeyPatch) -> nbformat.NotebookNode:
    from nbclient import NotebookClient

    for key, value in {"DOUDI_HOME": str(workspace.home),
                       "DOUDI_MLFLOW_TRACKING_URI": workspace.tracking_uri(),
                       "DOUDI_WORKERS": "1", "DOUDI_NOTEBOOK_AS_OF": AS_OF}.items():
        monkeypatch.setenv(key, value)  # the kernel inherits this process's environment
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    # which Python runs the cells: the project's, whatever `python` is on the PATH
    nb.cells.insert(0, nbformat.v4.new_code_cell("import sys; print(sys.executable)"))
    NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    return nb


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_executes_headless_with_chinese_in_every_figure(
    name: str, settings: Settings, tmp_path: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    nb = _execute(name, settings, tmp_path, monkeypatch)
    outputs = [o for cell in nb.cells for o in cell.get("outputs", [])]
    errors = [f"{o.ename}: {o.evalue}" for o in outputs if o.output_type == "error"]
    assert not errors, errors
    python = nb.cells[0].outputs[0].text.strip()
    assert Path(python).resolve() == Path(sys.executable).resolve()
    text = "\n".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert not MISSING_GLYPH.search(text), MISSING_GLYPH.search(text)
    figures = sum("image/png" in o.get("data", {}) for o in outputs)
    assert figures == FIGURES[name]
    assert "Traceback" not in text and "Warning" not in text, text[-2000:]


# -- the helpers the notebooks read through ------------------------------------------------
def test_explanation_shift_is_spearman_over_the_shared_features() -> None:
    champion = pd.Series({"a": 0.9, "b": 0.5, "c": 0.1, "only_new": 2.0})
    reversed_ = pd.Series({"a": 0.1, "b": 0.5, "c": 0.9, "only_old": 2.0})
    shift = notebook_data.explanation_shift(champion, reversed_)
    assert shift.features == 3 and shift.spearman == pytest.approx(-1.0)
    assert notebook_data.explanation_shift(champion, champion * 3).spearman == pytest.approx(1)
    # ranks 1,2,3,4 against 1,3,2,4: d^2 = 2, rho = 1 - 6*2 / (4*15) = 0.8
    mild = notebook_data.explanation_shift(pd.Series([4.0, 3, 2, 1], index=list("wxyz")),
                                           pd.Series([4.0, 2, 3, 1], index=list("wxyz")))
    assert mild.spearman == pytest.approx(0.8)
    assert list(mild.table["feature"][:2]) == ["x", "y"]  # the two that swapped lead


def test_undelivered_county_months_of_monthly_feeds(settings: Settings) -> None:  # noqa: F811
    ctx = notebook_data.notebook_context(settings, AS_OF)
    delivered = notebook_data.deliveries(ctx)
    assert set(delivered.columns) == {"feed", "county_code", "reported_month", "rows"}
    assert (delivered["reported_month"] <= AS_OF).all() and (delivered["rows"] > 0).all()
    county = sorted(delivered["county_code"].unique())[0]
    gap = (delivered["feed"] == "medical") & (delivered["county_code"] == county) & (
        delivered["reported_month"] == AS_OF)
    assert gap.sum() == 1  # delivered, until we take it away
    before = notebook_data.undelivered(ctx, delivered)
    after = notebook_data.undelivered(ctx, delivered[~gap])
    added = after.merge(before, how="left", indicator=True).query("_merge == 'left_only'")
    assert added[["feed", "county_code", "month"]].values.tolist() == [["medical", county, AS_OF]]
    sparse = delivered[delivered["feed"] == "disasters"]  # a sparse feed is never "missing"
    assert not notebook_data.undelivered(ctx, delivered.drop(sparse.index)).query(
        "feed == 'disasters'").shape[0]


def test_late_rows_are_those_later_than_the_feeds_usual_delay(
    settings: Settings,  # noqa: F811
) -> None:
    ctx = notebook_data.notebook_context(settings, AS_OF)
    delays = notebook_data.report_delays(ctx, ["medical"])
    assert len(delays) and (delays["late"] <= delays["rows"]).all()
    assert delays["usual_delay"].nunique() == 1 and np.isfinite(delays["usual_delay"]).all()


def test_as_of_defaults_to_the_latest_delivery_and_refuses_later(
    settings: Settings, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
) -> None:
    from doudi.errors import UserError

    monkeypatch.delenv(notebook_data.AS_OF_VARIABLE, raising=False)
    assert str(notebook_data.notebook_context(settings).as_of) == AS_OF
    monkeypatch.setenv(notebook_data.AS_OF_VARIABLE, "2025-03")
    assert str(notebook_data.notebook_context(settings).as_of) == "2025-03"
    with pytest.raises(UserError, match="after the latest delivered month"):
        notebook_data.notebook_context(settings, "2025-07")


def test_chinese_wraps_between_clauses_never_inside_a_number() -> None:
    reason = ("最近核查人均纯收入 8,865 元（本县中位数 21,816 元），最近核查人均纯收入为核查年度"
              "监测范围的 117%（本县中位数 291%）〔风险 +19.2 个百分点〕")
    lines = notebook_data.wrap_chinese(reason, 34).split("\n")
    assert "".join(lines) == reason and all(len(line) <= 34 for line in lines)
    assert lines[0] == "最近核查人均纯收入 8,865 元（本县中位数 21,816 元），"
    assert lines[-1].startswith("（本县中位数 291%）")
    assert notebook_data.wrap_chinese("甲" * 25, 10).split("\n") == ["甲" * 10] * 2 + ["甲" * 5]
