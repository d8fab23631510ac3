"""The old name of :mod:`segdend.sweep.report` (a sweep's runs.csv, summary.csv, figure and
sweep.json), kept so that ``from segdend.sweep_report import write_reports`` still works."""

from segdend.sweep.report import (
    RUN_COLUMNS,
    SUMMARY_COLUMNS,
    plot_summary,
    run_records,
    summarise,
    write_reports,
    write_sweep_json,
)

__all__ = ["RUN_COLUMNS", "SUMMARY_COLUMNS", "plot_summary", "run_records", "summarise",
           "write_reports", "write_sweep_json"]
