"""Build a run's report: leaderboard.csv, report/figures/*.png, report/README.md, report/index.html.

The runner calls :func:`build_report` at the end of every run; ``zoobench report RUN`` calls it at
any time, also on a run that is still going (the report shows what is done and says what is not).
"""

from __future__ import annotations

import logging
from pathlib import Path

from benchmark import atomic
from benchmark.formatting import utc_now
from benchmark.store.runstore import RunStore
from reports import stats
from reports.figures import make_figures
from reports.leaderboard import build_leaderboard, save_leaderboard
from reports.report import Report
from reports.robustness_figure import robustness_about, robustness_figure, robustness_tables
from reports.rundata import load_run

log = logging.getLogger(__name__)


def collect(store: RunStore, figures_dir: Path, *, resamples: int = 1000, seed: int = 0) -> Report:
    """Read the store, score the leaderboard, draw the figures and run the statistics."""
    run = load_run(store)
    board = build_leaderboard(run, resamples=resamples, seed=seed)
    figures = make_figures(run, board, figures_dir)
    robustness = robustness_figure(run, board, figures_dir)  # None: the run measured none
    return Report(
        run=run,
        board=board,
        figures=figures if robustness is None else [*figures, robustness],
        comparisons=stats.comparisons(run, board),
        about=[*stats.describe_run(run), *robustness_about(run, board)],
        built_at=utc_now(),
        notes=list(run.notes),
        tables=robustness_tables(run, board),
    )


def write_report(store: RunStore) -> Report:
    """Score the leaderboard once, write it and the report; the Report says where (``index``)."""
    from reports import html, markdown

    report_dir = store.report_dir
    report = collect(store, report_dir / "figures")
    save_leaderboard(store, report.board)
    atomic.write_text(report_dir / "README.md", markdown.render(report))
    report.index = report_dir / "index.html"
    atomic.write_text(report.index, html.render(report))
    drawn = sum(f.path is not None for f in report.figures)
    log.info(
        "report of %s: %d rows, %d/%d figures -> %s",
        store.root,
        len(report.board),
        drawn,
        len(report.figures),
        report.index,
    )
    return report


def build_report(store: RunStore) -> Path:
    """Write the leaderboard and the report of ``store``; return the path of ``report/index.html``."""
    index = write_report(store).index
    assert index is not None
    return index
