"""Who may import whom (docs/architecture.md), checked on the source."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STAGES = {"doudi", "province", "ingest", "features", "training", "serving", "monitoring",
          "jobs"}

# package -> the project packages it may import (docs/architecture.md's table). `doudi` is
# the ground every stage stands on and imports nothing above it; `jobs` is the roof (the
# CLI and the monthly job) and nothing imports it.
ALLOWED: dict[str, set[str]] = {
    "doudi": {"doudi"},
    "province": {"doudi", "province"},
    "ingest": {"doudi", "ingest"},
    "features": {"doudi", "features"},
    "training": {"doudi", "features", "training"},
    "serving": {"doudi", "features", "ingest", "serving"},
    "monitoring": {"doudi", "features", "serving", "monitoring"},
    "jobs": STAGES,
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found & STAGES


def _sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_packages_import_only_what_the_table_allows(package: str) -> None:
    offenders = {
        str(p.relative_to(ROOT)): sorted(_imports(p) - ALLOWED[package])
        for p in _sources(package)
        if _imports(p) - ALLOWED[package]
    }
    assert not offenders, offenders


def test_every_package_is_in_the_table() -> None:
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests", "bench"}
    assert packages == set(ALLOWED), packages ^ set(ALLOWED)


def _code_strings_and_calls(path: Path) -> tuple[set[str], set[str]]:
    """String constants (docstrings and other bare expressions left out) and names called."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    bare = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr)}
    strings = {n.value for n in ast.walk(tree)
               if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in bare}
    calls = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Call):
            f = n.func
            calls.add(f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute)
                      else "")
    return strings, calls


def test_the_model_registry_has_one_home() -> None:
    """MLflow clients, the telemetry switch and `models:/` URIs live in `doudi/registry.py`."""
    home = ROOT / "doudi" / "registry.py"
    offenders = {}
    for package in ALLOWED:
        for p in _sources(package):
            if p == home:
                continue
            strings, calls = _code_strings_and_calls(p)
            found = sorted({c for c in calls if c == "MlflowClient"}
                           | {s for s in strings if s == "MLFLOW_DISABLE_TELEMETRY"}
                           | {s for s in strings if s.startswith("models:/")})
            if found:
                offenders[str(p.relative_to(ROOT))] = found
    assert not offenders, offenders


def test_the_cli_starts_without_the_heavy_stack() -> None:
    """Command modules import their stages lazily: `doudi --help` loads no data stack."""
    import subprocess
    import sys

    code = ("import sys, jobs.cli; heavy = {'pandas', 'lightgbm', 'mlflow', 'bentoml', "
            "'sklearn', 'shap'} & set(sys.modules); print(sorted(heavy))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, check=True)
    assert done.stdout.strip() == "[]", done.stdout
