"""Render a township's caseworker sheet as it prints, and check what a program can check.

    .venv/bin/python bench/render_sheet.py                      # a small made-up township
    .venv/bin/python bench/render_sheet.py --png docs/img/caseworker-sheet.png
    .venv/bin/python bench/render_sheet.py --home WS --township 620122001   # a workspace
    .venv/bin/python bench/render_sheet.py --sheet WS/exports/2025-06/alerts_....xlsx

Exports the sheet with `serving.export.export_township` (from a made-up township of
three villages, or from a COPY of workspace WS: its alerts are not dispatched; or takes
a sheet `doudi monthly` wrote, with `--sheet`), converts
the workbook with LibreOffice (`soffice --headless --convert-to pdf`) and checks, with
poppler's `pdfinfo` and `pdftotext`:

- every page is landscape, and every village's worksheet printed;
- every page repeats the header row (all column headers in its text);
- nothing is cut: every line of every reason, rule and first step appears in the PDF
  text (LibreOffice does not print a line that does not fit its row). A line several
  alerts share (a rule's sentence) counts once found; the made-up township's reasons
  are all different, so a cut row there is always caught.

`--png FILE` writes page 1 as PNG (`pdftoppm`) to look at. Exit 1 on a failed check.
The made-up township's names, numbers and phones are invented: no real people.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, date, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from doudi.idnumber import make_id  # noqa: E402
from doudi.settings import Settings  # noqa: E402
from serving.export import TownshipExport, export_township  # noqa: E402
from serving.sheet import SHEET_COLUMNS  # noqa: E402
from serving.store import NewAlert, Reason, open_store  # noqa: E402
from serving.store.database import utcnow  # noqa: E402

TOWNSHIP = "620102001"
AS_OF = date(2026, 6, 30)
EXPORTED_AT = datetime(2026, 7, 3, 1, 30, tzinfo=UTC)  # the made-up township's export
TIMEOUT = 180.0

# Made-up reasons in the words of the registry's templates, sized in probability points;
# `i` (the household's position) makes every alert's text its own, so that a line found
# in the PDF is that alert's line.
_REASONS = {
    "oop": "近12个月住院自付医疗费用 {a:,} 元（本县中位数 1,200 元）〔风险 +{p:.1f} 个百分点〕",
    "house": "住房安全鉴定为D级危房，鉴定于2026年{m}月〔风险 +{p:.1f} 个百分点〕",
    "income": "人均纯收入 {b:,} 元，为2026年监测范围（7,900 元）的 {r}%〔风险 +{p:.1f} 个百分点〕",
    "work": "近12个月务工月数 {m} 个月（上年 10 个月）〔风险 +{p:.1f} 个百分点〕",
    "school": "家中有 2 名在校生，其中高中 {k} 名〔风险 +{p:.1f} 个百分点〕",
    "unemployed": "近12个月家庭成员累计登记失业 {u} 人月〔风险 +{p:.1f} 个百分点〕",
    "disaster": "近12个月受灾损失 {c:,} 元〔风险 +{p:.1f} 个百分点〕",
    "labour": "家庭劳动力人数 0 人，家庭人口 {k} 人〔风险 +{p:.1f} 个百分点〕",
}


def _reason(name: str, i: int, rank: int) -> str:
    b = 6_100 + 37 * i
    return _REASONS[name].format(a=21_300 + 700 * i, b=b, r=round(100 * b / 7_900), m=1 + i % 6,
                                 k=1 + i % 3, u=6 + i, c=10_400 + 350 * i,
                                 p=round(4.5 - 0.9 * rank - 0.07 * i, 1))


# (hardship types, reasons, rules fired, source): the alerts cycle through these
_KINDS: list[tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], str]] = [
    (("illness", "other"), ("oop", "income", "work"), ("R_MED_OOP", "R_INCOME_BELOW_LINE"),
     "both"),
    (("housing", "illness"), ("house", "oop"), ("R_HOUSE_D",), "both"),
    (("labor_shortage", "other"), ("labour", "income"), ("R_NO_LABOUR",), "both"),
    (("unstable_employment",), ("work", "unemployed"), ("R_LONG_UNEMPLOYED",), "both"),
    (("disaster", "housing"), ("disaster", "house"), ("R_DISASTER", "R_HOUSE_D"), "both"),
    (("education",), ("school", "income"), (), "model"),
    (("illness", "unstable_employment"), ("oop", "work", "unemployed"), ("R_MED_OOP",),
     "both"),
    (("illness",), ("oop",), (), "model"),
    (("housing",), (), ("R_HOUSE_D",), "rules"),
]
# village suffix -> how many alerts: the first village fills more than one printed page
_VILLAGES = {"001": 18, "002": 5, "003": 3}


def _tier(risk: float | None) -> str:
    return "yellow" if risk is None or risk < 0.3 else "orange" if risk < 0.5 else "red"


def made_up_township(home: Path) -> Settings:
    """A workspace with one township of three villages and its new alerts (names from
    tests/serving/export_world.py: made up)."""
    from tests.serving.export_world import write_world

    villages = [v for v, n in _VILLAGES.items() for _ in range(n)]
    households = {
        f"h_{i:020x}": (f"{TOWNSHIP}{village}", f"62010200100{i + 1:05d}", f"p_{i:020x}",
                        make_id("620102", date(1950 + 2 * i, 1 + i % 12, 3 + i), 2 * i + 1))
        for i, village in enumerate(villages)
    }
    settings = write_world(home, households)
    alerts = []
    for i, (key, (village, *_)) in enumerate(households.items()):
        types, reasons, rules, source = _KINDS[i % len(_KINDS)]
        risk = None if source == "rules" else round(0.75 - 0.025 * i, 3)
        alerts.append(NewAlert(
            household_key=key, village_code=village, as_of=AS_OF, model_version="doudi-risk/3",
            tier=_tier(risk), risk=risk, risk_types=types, rule_triggers=rules, source=source,
            reasons=tuple(Reason(rank, name, _reason(name, i, rank), 1.0)
                          for rank, name in enumerate(reasons, 1))))
    with open_store(settings=settings) as store:
        store.add_alerts(alerts)
    return settings


def export(settings: Settings, township: str, out: Path,
           exported_at: datetime | None = None) -> TownshipExport:
    """Export as `exported_at` (default now): the sheet's 反馈截止日期 counts from it."""
    clock = (lambda: exported_at) if exported_at else utcnow
    with open_store(settings=settings, clock=clock) as store:
        return export_township(store, township, settings, out)


def _run(*args: str) -> str:
    done = subprocess.run(args, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{args[0]} failed: {done.stderr.strip()[:300]}")
    return done.stdout


def to_pdf(workbook: Path, folder: Path) -> Path:
    profile = folder / "lo-profile"  # a private profile: no clash with a running soffice
    _run("soffice", f"-env:UserInstallation=file://{profile}", "--headless",
         "--convert-to", "pdf", "--outdir", str(folder), str(workbook))
    return folder / (workbook.stem + ".pdf")


def _squeezed(text: str) -> str:
    return re.sub(r"\s+", "", text)


def check(workbook: Path, csv: Path, pdf: Path) -> list[str]:
    """What is wrong with the printed sheet (empty: nothing found)."""
    import pandas as pd
    from openpyxl import load_workbook

    problems: list[str] = []
    info = _run("pdfinfo", str(pdf))
    pages = int(re.search(r"^Pages:\s+(\d+)", info, re.M).group(1))  # type: ignore[union-attr]
    texts = [_squeezed(_run("pdftotext", "-raw", "-f", str(p), "-l", str(p), str(pdf), "-"))
             for p in range(1, pages + 1)]
    for p in range(1, pages + 1):
        size = _run("pdfinfo", "-f", str(p), "-l", str(p), str(pdf))
        w, h = map(float, re.search(r"size:\s+([\d.]+) x ([\d.]+)", size).groups())  # type: ignore[union-attr]
        if w <= h:
            problems.append(f"page {p} is portrait ({w:.0f} x {h:.0f} pt)")
    headers = [c.header for c in SHEET_COLUMNS]
    for p, text in enumerate(texts, 1):
        lacking = [h for h in headers if h not in text]
        if lacking:
            problems.append(f"page {p} lacks the header(s) {', '.join(lacking)}")
    villages = load_workbook(workbook, read_only=True).sheetnames
    everything = "".join(texts)
    for village in villages:
        if not any(_squeezed(village) in t for t in texts):
            problems.append(f"village sheet {village} was not printed")
    sheet = pd.read_csv(csv, encoding="gbk", dtype=str, keep_default_na=False)
    for c in (c for c in SHEET_COLUMNS if c.multiline):
        for alert, cell in zip(sheet["预警编号"].str.strip(), sheet[c.header], strict=True):
            for line in (x for x in cell.split("；") if x):
                if _squeezed(line) not in everything:
                    problems.append(f"alert {alert}: {c.header} line cut or missing: {line}")
    print(f"{pages} page(s), {len(villages)} village sheet(s), {len(sheet)} alert(s): "
          + ("all checks passed" if not problems else f"{len(problems)} problem(s)"))
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, help="a workspace to copy and export from")
    parser.add_argument("--township", default=TOWNSHIP)
    parser.add_argument("--sheet", type=Path,
                        help="check this exported .xlsx (its .csv beside it) instead")
    parser.add_argument("--png", type=Path, help="write page 1 of the PDF here")
    parser.add_argument("--dpi", type=int, default=110)
    parser.add_argument("--keep", type=Path, help="keep the xlsx, csv and pdf in this folder")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="render-sheet-") as tmp:
        work = Path(tmp)
        if args.sheet:
            workbook, csv = args.sheet, args.sheet.with_suffix(".csv")
        else:
            if args.home:
                shutil.copytree(args.home, work / "ws", symlinks=True)
                # The copy's own SQLite store, never a configured database: the real alerts
                # must not be dispatched by a check.
                settings = Settings(home=work / "ws", database_url=None, workers=1,
                                    operator="render-check")
            else:
                settings = made_up_township(work / "ws")
            done = export(settings, args.township, work / "sheets",
                          None if args.home else EXPORTED_AT)
            workbook, csv = done.workbook, done.csv
        pdf = to_pdf(workbook, work)
        problems = check(workbook, csv, pdf)
        for problem in problems:
            print("  " + problem)
        if args.png:
            args.png.parent.mkdir(parents=True, exist_ok=True)
            stem = work / "page"
            _run("pdftoppm", "-png", "-r", str(args.dpi), "-f", "1", "-l", "1",
                 "-singlefile", str(pdf), str(stem))
            shutil.copyfile(stem.with_suffix(".png"), args.png)
            print(f"page 1 -> {args.png}")
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            for path in (workbook, csv, pdf):
                shutil.copyfile(path, args.keep / path.name)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
