"""Measure the default run as a new user gets it: `zoobench run` with an empty cache, timed.

Runs ``zoobench run PROFILE`` (default cpu-quick) into a new folder with ``ZOOBENCH_CACHE`` pointed
at an empty folder (or ``--cache``, to measure a second run that reuses the first one's feature
cache), optionally with ``--load N`` other CPU-bound processes spinning throughout, and prints
the wall time, the run's own ``wall_seconds``, the leaderboard head (test accuracy on the run's
test split, with its data source) and the best ensemble's margin over the best member.

    python scripts/bench_default_run.py --data-dir ../shared/data/cifar10-jpg --out /tmp/default-run
    python scripts/bench_default_run.py --out /tmp/default-run-loaded --load 1
    python scripts/bench_default_run.py --out /tmp/default-run-2 --cache /tmp/default-run/cache
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu-quick")
    parser.add_argument(
        "--data-dir", default=os.environ.get("ZOOBENCH_DATA", "../shared/data/cifar10-jpg")
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="a new folder: run/, cache/, figures"
    )
    parser.add_argument(
        "--cache", type=Path, default=None, help="ZOOBENCH_CACHE to use (default: OUT/cache, empty)"
    )
    parser.add_argument("--load", type=int, default=0, help="CPU-bound processes to run alongside")
    parser.add_argument("--budget", default=None, help="override the profile's budget")
    parser.add_argument("--head", type=int, default=8, help="leaderboard rows to print")
    parser.add_argument(
        "--record", default=None, help="write the result to docs/results/<NAME>.json (and .md)"
    )
    return parser.parse_args()


def spin() -> None:  # pragma: no cover - a busy process, killed by the parent
    x = 0
    while True:
        x = (x * 1103515245 + 12345) % 2**31


def record_rows(board) -> list[dict]:
    """The leaderboard rows as the results page shows them: accuracy with its interval, F1,
    calibration and robustness where the run measured them."""
    rows = []
    for _, r in board.iterrows():
        row = {"model": r["model"], "kind": r["kind"]}
        row["val acc"] = round(float(r["val_accuracy"]), 4)
        if r.get("val_out_of_fold") is True or str(r.get("val_out_of_fold")) == "True":
            row["val acc"] = f"{row['val acc']} (out-of-fold)"
        row["test acc"] = round(float(r["test_accuracy"]), 4)
        if "test_accuracy_low" in r:
            row["test 95% CI"] = f"{r['test_accuracy_low']:.3f}-{r['test_accuracy_high']:.3f}"
        for key, name in (
            ("f1_macro", "macro F1"),
            ("ece", "ECE"),
            ("ece_uncalibrated", "ECE before calibration"),
            ("train_seconds", "train s"),
            ("corruption_accuracy", "corrupted"),
            ("corruption_accuracy_adabn", "+ AdaBN"),
            ("fgsm_accuracy", "FGSM"),
        ):
            value = r.get(key)
            if value is not None and value == value:  # NaN: not measured for this row
                row[name] = round(float(value), 4)
        rows.append(row)
    return rows


def main() -> int:
    args = parse_args()
    import pandas as pd
    from tabulate import tabulate

    if args.out.exists() and any(args.out.iterdir()):
        raise SystemExit(f"bench_default_run: {args.out} is not empty; give a new folder")
    args.out.mkdir(parents=True, exist_ok=True)
    run_dir = args.out / "run"
    cache = args.cache or args.out / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "ZOOBENCH_CACHE": str(cache), "PYTHONUNBUFFERED": "1"}
    cmd = [
        sys.executable,
        "-m",
        "benchmark.cli",
        "run",
        args.profile,
        "--out",
        str(run_dir),
        "--data-dir",
        str(args.data_dir),
    ]
    if args.budget:
        cmd += ["--budget", args.budget]
    spinners = [multiprocessing.Process(target=spin, daemon=True) for _ in range(args.load)]
    for p in spinners:
        p.start()
    start = time.perf_counter()
    with open(args.out / "log.txt", "w") as log:
        status = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - start
    for p in spinners:
        p.kill()
    print(f"$ ZOOBENCH_CACHE={cache} {' '.join(cmd[1:])}")
    print(
        f"exit {status}; wall {wall / 60:.0f} min {wall % 60:02.0f} s (process start-up included); "
        f"{args.load} other CPU-bound process(es); log: {args.out / 'log.txt'}"
    )
    if status:
        return status
    meta = json.loads((run_dir / "run.json").read_text())
    board = pd.read_csv(run_dir / "leaderboard.csv")
    sizes = meta["data"].get("sizes", {})
    print(
        f"run wall_seconds {meta.get('wall_seconds')}; data {meta['data'].get('source')} {sizes}; "
        f"seed {meta.get('seed')}"
    )
    cols = [
        c for c in ("model", "kind", "val_accuracy", "test_accuracy", "train_seconds") if c in board
    ]
    print(
        tabulate(
            board[cols].head(args.head),
            headers="keys",
            tablefmt="github",
            showindex=False,
            floatfmt=".4f",
        )
    )
    ok = board[board["status"].fillna("done") == "done"] if "status" in board else board
    ensembles, members = ok[ok["kind"] == "ensemble"], ok[ok["kind"] != "ensemble"]
    if len(ensembles) and len(members):
        best_e = ensembles.iloc[0]  # sorted by validation accuracy: the one selection picks
        best_m = members.iloc[0]
        print(
            f"best ensemble {best_e['model']} {best_e['test_accuracy']:.2%} vs best member "
            f"{best_m['model']} {best_m['test_accuracy']:.2%}: "
            f"{(best_e['test_accuracy'] - best_m['test_accuracy']) * 100:+.2f} points"
        )
    shutil.copy(run_dir / "leaderboard.csv", args.out / "leaderboard.csv")
    if args.record:
        from results_io import write_result  # scripts/ is on sys.path: run as a script

        rows = record_rows(board.head(args.head))
        path = write_result(
            args.record,
            title=f"The default run ({args.profile}) from a fresh clone, empty cache",
            command=" ".join(["python", "scripts/bench_default_run.py", *sys.argv[1:]]),
            data_source=f"{meta['data'].get('source')} {sizes}, seed {meta.get('seed')}",
            table=rows,
            notes=[
                f"wall {wall / 60:.0f} min {wall % 60:02.0f} s (process start-up included); "
                f"{args.load} other CPU-bound process(es) alongside",
            ],
        )
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
