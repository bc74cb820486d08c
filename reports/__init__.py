"""Reports: the leaderboard, figures and the Markdown / HTML report, built from the run store."""
