"""Build a run's report: leaderboard.csv, report/figures/*.png, report/README.md, report/index.html.

The runner calls :func:`build_report` at the end of every run; ``zoobench report RUN`` calls it at
any time, also on a run that is still going (the report shows what is done and says what is not).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from benchmark import atomic
from benchmark.store import RunStore
from reports import stats
from reports.figures import Figure, make_figures
from reports.leaderboard import build_leaderboard, save_leaderboard
from reports.rundata import RunData, load_run

log = logging.getLogger(__name__)


@dataclass
class Report:
    """Everything the Markdown and HTML renderers show, computed once."""

    run: RunData
    board: pd.DataFrame
    figures: list[Figure]
    comparisons: list[stats.Comparison]
    about: list[tuple[str, str]]
    built_at: str
    notes: list[str] = field(default_factory=list)

    @property
    def title(self) -> str:
        return f"zoobench report: {self.run.meta.get('name') or self.run.store.root.name}"

    @property
    def finished(self) -> bool:
        return bool(self.run.meta.get("finished_at"))

    @property
    def state(self) -> str:
        """One sentence: when the report was built and how far the run had got."""
        done = int((self.board["status"] == "done").sum()) if len(self.board) else 0
        rows = f"{done} of {len(self.board)} leaderboard rows done"
        if self.finished:
            return (
                f"Built {self.built_at}; the run finished {self.run.meta['finished_at']}; {rows}."
            )
        return (
            f"Built {self.built_at}; run.json records no finish yet, so this shows what was stored "
            f"by then; {rows}."
        )


def collect(store: RunStore, figures_dir: Path, *, resamples: int = 1000, seed: int = 0) -> Report:
    """Read the store, score the leaderboard, draw the figures and run the statistics."""
    run = load_run(store)
    board = build_leaderboard(run, resamples=resamples, seed=seed)
    figures = make_figures(run, board, figures_dir)
    return Report(
        run=run,
        board=board,
        figures=figures,
        comparisons=stats.comparisons(run, board),
        about=stats.describe_run(run),
        built_at=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        notes=list(run.notes),
    )


def build_report(store: RunStore) -> Path:
    """Write the leaderboard and the report of ``store``; return the path of ``report/index.html``."""
    from reports import html, markdown

    report_dir = store.report_dir
    report = collect(store, report_dir / "figures")
    save_leaderboard(store, report.board)
    atomic.write_text(report_dir / "README.md", markdown.render(report))
    index = report_dir / "index.html"
    atomic.write_text(index, html.render(report))
    drawn = sum(f.path is not None for f in report.figures)
    log.info("report of %s: %d rows, %d/%d figures -> %s", store.root, len(report.board), drawn,
             len(report.figures), index)  # fmt: skip
    return index
