"""What a report shows, computed once: the run, its leaderboard, figures, statistics and notes.

``reports.build`` computes it; the Markdown and HTML renderers and whoever prints the leaderboard
(the runner, ``zoobench report``) read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from reports import stats
from reports.figures import Figure
from reports.rundata import RunData


@dataclass
class Table:
    """A table the report shows under its own heading (the robustness tables)."""

    key: str
    title: str
    caption: str
    frame: pd.DataFrame  # cells already formatted as text


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
    index: Path | None = None  # report/index.html once written
    tables: list[Table] = field(default_factory=list)  # shown under their own headings

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
