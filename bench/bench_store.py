"""Alert store timings: add_alerts (3 reasons each), idempotent re-add, feedback import."""

from __future__ import annotations

import secrets
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import psycopg

from serving.store import NewAlert, Reason, import_feedback, open_store

N = int(sys.argv[1]) if len(sys.argv) > 1 else 5000


def batch(n: int) -> list[NewAlert]:
    return [
        NewAlert(
            household_key=f"hk{i:08d}",
            village_code=f"620102{i % 20:03d}{i % 7:03d}",
            as_of=date(2026, 3, 31),
            model_version="m1",
            tier="red",
            risk=0.5,
            risk_types=("illness",),
            reasons=tuple(Reason(r, f"g{r}", "近12个月自付医疗费用高", 0.1) for r in (1, 2, 3)),
        )
        for i in range(n)
    ]


def run(url: str, folder: Path) -> tuple[float, float, float]:
    alerts = batch(N)
    with open_store(url) as store:
        t = time.perf_counter()
        ids = store.add_alerts(alerts).created
        add = time.perf_counter() - t
        t = time.perf_counter()
        assert store.add_alerts(alerts).created == ()
        readd = time.perf_counter() - t
        store.dispatch(ids, actor="bench")
        path = folder / "v.csv"
        lines = ["预警编号,核实结果,确认风险类型,走访日期,核实人"]
        lines += [f"{i},属实,因病,2026-04-02,GS01" for i in ids]
        path.write_text("\n".join(lines), encoding="utf-8")
        t = time.perf_counter()
        import_feedback(store, path, actor="bench", today=date(2026, 5, 1))
        feedback = time.perf_counter() - t
    return add, readd, feedback


def main() -> None:
    for backend in ("sqlite", "postgres"):
        results = []
        for _ in range(3):
            folder = Path(tempfile.mkdtemp())
            if backend == "sqlite":
                results.append(run(f"sqlite:///{folder / 'a.db'}", folder))
                continue
            name = f"doudi_store_bench_{secrets.token_hex(4)}"
            server = "postgresql://postgres@127.0.0.1:5432/postgres"
            with psycopg.connect(server, autocommit=True) as c:
                c.execute(f'CREATE DATABASE "{name}"')
            try:
                results.append(run(f"postgresql://postgres@127.0.0.1:5432/{name}", folder))
            finally:
                with psycopg.connect(server, autocommit=True) as c:
                    c.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        medians = [statistics.median(r[i] for r in results) for i in range(3)]
        print(
            f"{backend}: N={N} add_alerts {medians[0]:.2f}s, re-add {medians[1]:.2f}s, "
            f"feedback import {medians[2]:.2f}s (median of 3)"
        )


if __name__ == "__main__":
    main()
