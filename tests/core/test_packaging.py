"""The wheel's import names (docs/architecture.md "Packaging"): doudi ships its stage folders
as top-level packages, so nothing else installed may claim one of those names."""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

from tests.core.test_architecture import ALLOWED

ROOT = Path(__file__).resolve().parents[2]


def _wheel_packages() -> set[str]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return set(pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"])


def _top_level_names(dist: metadata.Distribution) -> set[str]:
    """Import names a distribution installs: top_level.txt, else the first part of its files."""
    listed = dist.read_text("top_level.txt")
    if listed:
        return {line.strip() for line in listed.splitlines() if line.strip()}
    names = set()
    for file in dist.files or ():
        first = file.parts[0]
        if first.endswith((".dist-info", ".data", ".pth")) or first in {"..", "bin"}:
            continue
        names.add(first.removesuffix(".py"))
    return names


def test_the_wheel_ships_exactly_the_packages_of_the_architecture_table() -> None:
    assert _wheel_packages() == set(ALLOWED)


def test_no_other_installed_distribution_claims_our_import_names() -> None:
    ours = _wheel_packages()
    clashes = {
        dist.metadata["Name"]: sorted(_top_level_names(dist) & ours)
        for dist in metadata.distributions()
        if dist.metadata["Name"] != "doudi" and _top_level_names(dist) & ours
    }
    assert not clashes, clashes
