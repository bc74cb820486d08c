"""The report as Markdown (report/README.md): the same tables as the HTML page, figures linked."""

from __future__ import annotations

import pandas as pd
from tabulate import tabulate

from reports.leaderboard import CALIBRATION_NOTE, display_table, table_notes
from reports.report import Report
from reports.stats import Comparison, summary_sentence


def leaderboard_markdown(board) -> str:
    """The leaderboard as a GitHub Markdown table (tabulate)."""
    if board.empty:
        return "_No members or ensembles stored yet._"
    table = _escape(display_table(board))
    return tabulate(
        table, headers="keys", tablefmt="github", showindex=False, disable_numparse=True
    )


def render(report: Report) -> str:
    """The whole report; figures are linked as ``figures/NAME.png`` beside README.md."""
    lines = [f"# {report.title}", ""]
    lines += [report.state, ""]
    lines += [
        "## Leaderboard",
        "",
        "Ordered by validation accuracy (what selection used); test scores are reported, "
        "never used to choose. Test accuracy carries a 95% bootstrap interval (1000 "
        f"resamples); ECE uses 15 confidence bins. {CALIBRATION_NOTE}",
        "",
        leaderboard_markdown(report.board),
        "",
    ]
    lines += [*(f"{note}\n" for note in table_notes(report.board))]
    lines += ["## Is the winner better?", ""]
    if not report.comparisons:
        lines += ["_Needs at least two rows with test predictions._", ""]
    for c in report.comparisons:
        lines += [f"### {c.title}", "", summary_sentence(c), ""]
        per_class = pd.DataFrame(
            {
                "class": c.per_class["class"],
                "a": c.per_class["a"].map("{:.1%}".format),
                "b": c.per_class["b"].map("{:.1%}".format),
                "difference": c.per_class["difference"].map("{:+.1%}".format),
                "support": c.per_class["support"],
            }
        )
        per_class = _escape(per_class.astype(str))
        headers = [_cell(h) for h in comparison_headers(c)]
        lines += [
            tabulate(
                per_class,
                headers=headers,
                tablefmt="github",
                showindex=False,
                disable_numparse=True,
                colalign=("left", *["right"] * 4),
            ),
            "",
        ]
    lines += ["## Figures", ""]
    for fig in report.figures:
        lines += [f"### {fig.title}", ""]
        if fig.path is None:
            lines += [f"_Skipped: {fig.note}._", ""]
        else:
            lines += [f"![{fig.title}](figures/{fig.path.name})", "", fig.caption, ""]
    if report.tables:
        lines += ["## Robustness by corruption and severity", ""]
    for table in report.tables:
        lines += [
            f"### {table.title}",
            "",
            table.caption,
            "",
            tabulate(
                _escape(table.frame.astype(str)),
                headers="keys",
                tablefmt="github",
                showindex=False,
                disable_numparse=True,
            ),
            "",
        ]
    lines += [
        "## Data and settings",
        "",
        tabulate(
            [(_cell(k), _cell(v)) for k, v in report.about],
            headers=["Setting", "Value"],
            tablefmt="github",
            disable_numparse=True,
        ),
        "",
    ]
    if report.notes:
        lines += ["## Notes", "", *[f"- {n}" for n in report.notes], ""]
    return "\n".join(lines)


def comparison_headers(c: Comparison) -> list[str]:
    """Headers of a per-class comparison: both models by name, A and B as in its sentence."""
    return ["class", f"A: {c.a}", f"B: {c.b}", "A \u2212 B", "support"]


def _cell(text: str) -> str:
    """A table cell that cannot break the Markdown table: pipes escaped, no line breaks."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _escape(frame):
    return frame.map(_cell)
