"""Reports: the leaderboard, figures and the Markdown / HTML report, built from the run store."""

from reports.build import build_report
from reports.leaderboard import leaderboard

__all__ = ["build_report", "leaderboard"]
