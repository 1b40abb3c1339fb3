"""Open a `doudi report` HTML page in headless Chromium as a person would: screenshot it,
collect JavaScript errors and check that every section heading and a plotly chart made it
into the rendered page.

    python bench/check_report.py REPORT.html [--screenshot report.png] [--chromium PATH]

Chromium runs offline (no network, a fresh profile); the page must render from the file
alone. An error collector (`window.onerror`, `unhandledrejection`, `console.error`) is
injected before the page's own scripts; after rendering its findings are written into the
DOM, which `--dump-dom` prints. Exit 0 when clean, 1 with the problems listed.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from monitoring.report_sections import TITLES

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--virtual-time-budget=15000"]
# The seven section headings, as the report writes them.
SECTIONS = tuple(zh for zh, _ in TITLES.values())
COLLECTOR = """<script>
window.__doudiErrors = [];
window.addEventListener('error', function (e) {
  window.__doudiErrors.push('error: ' + (e.message || (e.target && e.target.src) || e));
}, true);
window.addEventListener('unhandledrejection', function (e) {
  window.__doudiErrors.push('unhandled rejection: ' + e.reason);
});
(function () {
  var original = console.error;
  console.error = function () {
    window.__doudiErrors.push('console.error: ' + Array.prototype.join.call(arguments, ' '));
    return original.apply(console, arguments);
  };
})();
window.addEventListener('load', function () {
  setTimeout(function () {
    var out = document.createElement('pre');
    out.id = 'doudi-check';
    out.setAttribute('data-plots', String(document.querySelectorAll('.js-plotly-plot').length));
    out.textContent = JSON.stringify(window.__doudiErrors);
    document.body.appendChild(out);
  }, 500);
});
</script>"""
CHECK = re.compile(r'<pre id="doudi-check" data-plots="(\d+)">(.*?)</pre>', re.S)


@dataclass
class Check:
    problems: list[str] = field(default_factory=list)
    plots: int = 0


def _run(chromium: str, args: list[str], page: Path,
         timeout: float) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="doudi-chromium-") as profile:
        command = [chromium, *FLAGS, f"--user-data-dir={profile}", *args, page.as_uri()]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              check=False)


def check_report(report: Path, *, screenshot: Path | None = None,
                 chromium: str = CHROMIUM, timeout: float = 180.0) -> Check:
    """Render `report` in headless Chromium; the problems found (none: it is clean)."""
    if not Path(chromium).exists() and shutil.which(chromium) is None:
        return Check([f"no Chromium at {chromium}"])
    found = Check()
    html = report.read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory(prefix="doudi-report-check-") as tmp:
        probe = Path(tmp) / report.name
        # the collector goes first in <head>, before plotly.js and the figures run
        probe.write_text(html.replace("<head>", "<head>" + COLLECTOR, 1), encoding="utf-8")
        dumped = _run(chromium, ["--dump-dom"], probe, timeout)
        if screenshot is not None:
            shot = _run(chromium, [f"--screenshot={screenshot}", "--window-size=1400,4000"],
                        report, timeout)
            if not screenshot.exists():
                found.problems.append(f"no screenshot written: {shot.stderr.strip()[-300:]}")
    dom = dumped.stdout
    match = CHECK.search(dom)
    if match is None:
        found.problems.append("the page did not finish loading (no error collector output); "
                              f"chromium said: {dumped.stderr.strip()[-300:]}")
        return found
    found.plots = int(match.group(1))
    errors = match.group(2).strip()
    if errors not in ("", "[]"):
        found.problems.append(f"JavaScript errors: {errors}")
    found.problems += [f"section heading missing: {s}" for s in SECTIONS if s not in dom]
    if found.plots == 0:
        found.problems.append("no plotly chart was drawn")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("--screenshot", type=Path)
    parser.add_argument("--chromium", default=CHROMIUM)
    args = parser.parse_args()
    result = check_report(args.report, screenshot=args.screenshot, chromium=args.chromium)
    for problem in result.problems:
        print(f"problem: {problem}")
    print(f"{result.plots} chart(s) drawn; {'clean' if not result.problems else 'NOT clean'}")
    return 1 if result.problems else 0


if __name__ == "__main__":
    sys.exit(main())
