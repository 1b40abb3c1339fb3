"""Monitoring the champion in production (`doudi monitor`, docs/monitoring.md).

`monitor.run_monitor(settings, as_of)` -> `MonitorReport`: data and score drift against the
champion's training reference (`drift`), calibration by risk band and performance while
labels mature (`performance`), and a plain retrain recommendation. Reads the warehouse
through `features`, the alert store through `serving.store`; imported only by `jobs/`
and notebooks.
"""
