"""``zoobench report RUN``: rebuild a run's leaderboard and report from its store, at any time."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_commands(sub) -> None:
    report = sub.add_parser(
        "report",
        help="rebuild a run's leaderboard.csv, report/index.html and report/README.md",
        description="Rebuild the leaderboard and the HTML / Markdown report from a run folder; "
        "works on an unfinished run too (it shows what is done).",
    )
    report.add_argument("run", metavar="RUN", help="run folder (or a run name under ./runs)")
    report.set_defaults(func=cmd_report)
    runs = sub.add_parser(
        "runs",
        help="list the runs in a folder: profile, data, status, best model, test accuracy",
        description="One line per run folder under DIR (default ./runs), read from run.json and "
        "the saved leaderboard; nothing is recomputed.",
    )
    runs.add_argument("dir", nargs="?", default="runs", metavar="DIR", help="default ./runs")
    runs.add_argument("--json", action="store_true", help="print JSON instead of a table")
    runs.set_defaults(func=cmd_runs, needs_keras=False)
    compare = sub.add_parser(
        "compare",
        help="two runs' leaderboards side by side on the same test split, with McNemar's test",
        description="Put two runs' leaderboards side by side and test their bests against each "
        "other (McNemar) on the test images both were scored on; runs whose test splits differ "
        "are refused.",
    )
    compare.add_argument("run_a", metavar="RUN_A", help="run folder (or a run name under ./runs)")
    compare.add_argument("run_b", metavar="RUN_B", help="run folder (or a run name under ./runs)")
    compare.add_argument("--json", action="store_true", help="print JSON instead of tables")
    compare.add_argument("--html", metavar="PATH", help="also write a small HTML page to PATH")
    compare.set_defaults(func=cmd_compare, needs_keras=False)


def resolve_run(run: str) -> Path:
    """A path as given, else ``runs/RUN`` when that exists (the runner's default location)."""
    path = Path(run)
    if not path.exists() and not path.is_absolute() and (Path("runs") / run).is_dir():
        return Path("runs") / run
    return path


def cmd_report(args: argparse.Namespace) -> int:
    from benchmark.store.runstore import RunStore
    from reports.build import write_report
    from reports.leaderboard import console_lines

    store = RunStore(resolve_run(args.run))
    report = write_report(store)
    index = report.index
    for line in console_lines(report.board, store):
        print(line)
    print(f"leaderboard: {store.leaderboard_csv}")
    print(f"report:      {index}")
    print(f"markdown:    {index.with_name('README.md')}")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    import json

    from tabulate import tabulate

    from reports.runs import display, run_rows

    rows = run_rows(Path(args.dir))
    if args.json:
        print(json.dumps(rows, indent=2))
    elif rows:
        headers = ["Run", "Profile", "Data", "Backend", "Status", "Best", "Test acc.", "Wall time"]
        print(tabulate(display(rows), headers=headers, tablefmt="github", disable_numparse=True))
    else:
        print(f"no zoobench runs in {args.dir}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    import json

    from tabulate import tabulate

    from reports import compare

    result = compare.compare_runs(resolve_run(args.run_a), resolve_run(args.run_b))
    page = compare.write_html(result, args.html) if args.html else None
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
        return 0
    print(
        tabulate(
            compare.summary_table(result),
            headers=compare.SUMMARY_HEADERS,
            tablefmt="github",
            disable_numparse=True,
        )
    )
    print()
    print(result.split_line)
    print(result.sentence)
    print()
    print(
        tabulate(
            compare.board_table(result),
            headers=compare.board_headers(),
            tablefmt="github",
            disable_numparse=True,
        )
    )
    if page is not None:
        print(f"\nhtml: {page}")
    return 0
