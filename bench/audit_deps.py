"""Dependency audit: the locked packages against published advisories, and the security floors.

    make audit                                          # = .venv/bin/python bench/audit_deps.py
    .venv/bin/python bench/audit_deps.py --allow-unaudited      # see "exit status" below
    .venv/bin/python bench/audit_deps.py --service osv          # where OSV is reachable

1. The security floors that close known advisories (issue 15: BentoML >= 1.4.39,
   MLflow >= 3.10, LightGBM >= 4.6) are checked against the versions in uv.lock: offline.
2. `uv export --frozen` writes every locked package (all dependency groups, pinned, with
   hashes) as a requirements file, and pip-audit checks each pin against the vulnerability
   service (--service: `pypi`, pip-audit's default, the per-release JSON pages of PyPI;
   or `osv`) without resolving or installing anything (`--no-deps --disable-pip`).

pip-audit reports a package its service does not know as skipped and still exits 0: a
run that audited nothing looks clean. This script counts them: a package not audited is
not a pass.

Exit status: 0 when every locked package was audited with no advisory and the floors hold;
1 when an advisory or a broken floor is found (each printed with its fix versions); 3 when
no advisory was found but some packages could not be audited (the service unreachable, or
it does not know the release), unless --allow-unaudited, which makes that 0 with a warning.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent

# Floors that close published advisories (STACK_NOTES, issue 15); pyproject.toml holds the
# same lower bounds, this list keeps them from being loosened unnoticed.
SECURITY_FLOORS = {"bentoml": "1.4.39", "mlflow": "3.10", "lightgbm": "4.6.0"}


def locked_versions(lock: Path) -> dict[str, str]:
    """Package name -> version, from uv.lock."""
    data = tomllib.loads(lock.read_text(encoding="utf-8"))
    return {p["name"]: p["version"] for p in data.get("package", []) if "version" in p}


def broken_floors(versions: dict[str, str]) -> list[str]:
    """One line per floor the lock does not meet (a missing package is not a breach)."""
    from packaging.version import Version

    return [
        f"{name} {versions[name]} is below the security floor {floor}"
        for name, floor in SECURITY_FLOORS.items()
        if name in versions and Version(versions[name]) < Version(floor)
    ]


def export_lock(out: Path) -> None:
    """Every locked package, pinned with hashes, as a requirements file (`uv export`)."""
    uv = VENV_BIN / "uv"
    subprocess.run(
        [
            str(uv if uv.is_file() else "uv"),
            "export",
            "--frozen",
            "--format",
            "requirements.txt",
            "--no-emit-project",
            "--all-groups",
            "--quiet",
            "-o",
            str(out),
        ],
        cwd=ROOT,
        check=True,
    )


def pip_audit(requirements: Path, service: str, timeout: int) -> dict[str, Any]:
    """pip-audit's JSON report for these pins (nothing resolved or installed); with the
    service unreachable, a report of no dependency and pip-audit's last error line."""
    exe = VENV_BIN / "pip-audit"
    if not exe.is_file():
        raise SystemExit("no pip-audit in this venv: `make install` (the dev group)")
    run = subprocess.run(
        [
            str(exe),
            "-r",
            str(requirements),
            "--no-deps",
            "--disable-pip",
            "--format",
            "json",
            "--progress-spinner",
            "off",
            "--vulnerability-service",
            service,
            "--timeout",
            str(timeout),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        return dict(json.loads(run.stdout))
    except json.JSONDecodeError:
        last = (run.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"dependencies": [], "failure": f"pip-audit exited {run.returncode}: {last}"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--service", default="pypi", choices=["pypi", "osv"])
    ap.add_argument("--timeout", type=int, default=15, help="per request to the service, s")
    ap.add_argument(
        "--allow-unaudited",
        action="store_true",
        help="exit 0, with a warning, when packages could not be audited",
    )
    args = ap.parse_args()

    versions = locked_versions(ROOT / "uv.lock")
    floors = broken_floors(versions)
    for line in floors:
        print(f"FLOOR   {line}")
    with tempfile.TemporaryDirectory() as tmp:
        requirements = Path(tmp) / "requirements.txt"
        export_lock(requirements)
        report = pip_audit(requirements, args.service, args.timeout)
    deps = [d for d in report.get("dependencies", []) if isinstance(d, dict)]
    skipped = [d for d in deps if d.get("skip_reason")]
    found = [(d, v) for d in deps for v in d.get("vulns", [])]
    for dep, vuln in found:
        fixes = ", ".join(vuln.get("fix_versions", [])) or "no fixed release"
        aliases = ", ".join(vuln.get("aliases", []))
        print(
            f"ADVISORY {dep['name']} {dep['version']}: {vuln['id']}"
            f"{f' ({aliases})' if aliases else ''}; fixed in {fixes}"
        )
    if "failure" in report:  # nothing audited at all: every locked package counts as skipped
        print(f"not audited: {report['failure'][:300]}")
        skipped = [{"name": n, "skip_reason": "the vulnerability service failed"} for n in versions]
        deps = skipped
    audited = len(deps) - len(skipped)
    floor_list = ", ".join(f"{k} >= {v}" for k, v in SECURITY_FLOORS.items())
    print(
        f"{len(deps)} locked packages; {audited} audited against {args.service}, "
        f"{len(skipped)} not audited; {len(found)} advisories; floors "
        f"{'hold' if not floors else 'BROKEN'} ({floor_list})"
    )
    if skipped:
        reasons: dict[str, int] = {}
        for d in skipped:
            # "Dependency not found on PyPI and could not be audited: NAME (VERSION)"
            reason = str(d["skip_reason"]).split(":")[0]
            reasons[reason] = reasons.get(reason, 0) + 1
        for reason, n in reasons.items():
            print(f"not audited: {n} × {reason}")
    if found or floors:
        sys.exit(1)
    if skipped:
        if args.allow_unaudited:
            print("WARNING: packages were not audited (--allow-unaudited): this is no pass")
            sys.exit(0)
        sys.exit(3)


if __name__ == "__main__":
    main()
