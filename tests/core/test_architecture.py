"""Who may import whom (docs/architecture.md), checked on the source."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STAGES = {"doudi", "province", "ingest", "features", "training", "serving"}

# package -> packages it must never import
FORBIDDEN: dict[str, set[str]] = {
    "province": {"ingest", "features", "training", "serving"},
    "ingest": {"province", "features", "training", "serving"},
    "features": {"province", "ingest", "training", "serving"},
    "training": {"province", "ingest", "serving"},
    "serving": {"province", "training"},
}
# doudi's shared modules (everything but the CLI wiring) import no stage package
WIRING = ("doudi/cli.py", "doudi/commands/")


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


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_stage_packages_respect_the_flow(package: str) -> None:
    offenders = {
        str(p.relative_to(ROOT)): sorted(_imports(p) & FORBIDDEN[package])
        for p in _sources(package)
        if _imports(p) & FORBIDDEN[package]
    }
    assert not offenders, offenders


def test_shared_core_imports_no_stage() -> None:
    offenders = {}
    for p in _sources("doudi"):
        rel = str(p.relative_to(ROOT))
        if rel.startswith(WIRING):
            continue
        bad = _imports(p) - {"doudi"}
        if bad:
            offenders[rel] = sorted(bad)
    assert not offenders, offenders
