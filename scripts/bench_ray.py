"""Wall time of one CPU-sized profile run plainly and on a local Ray instance with 1 and 2 workers,
beside what the plan's packing says more slots (a cluster) would give.

The profile is four independent members (one seed_cnn, four seeds: the case Ray spreads) on a
few thousand real CIFAR-10 pictures. Each mode is a fresh `zoobench run` in its own folder (process
start-up and, for Ray, starting the local instance included). The two Ray modes use the same cores:
1 worker asks for 2 CPUs a member, 2 workers ask for 1 each (TensorFlow's thread pools follow).

    python scripts/bench_ray.py --train 4000 --epochs 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

MODES = {
    "plain (no Ray)": [],
    "Ray, 1 worker (2 CPUs a member)": ["--ray", "local", "--ray-task-cpus", "2"],
    "Ray, 2 workers (1 CPU a member)": ["--ray", "local", "--ray-task-cpus", "1"],
}


def profile_toml(args) -> str:
    return f"""
name = "ray-bench"
description = "four seeds of one seed_cnn: independent members"
seed = 0
[data]
dataset = "cifar10"
train_size = {args.train}
val_size = {args.val}
test_size = {args.test}
[training]
epochs = {args.epochs}
batch_size = 128
early_stopping_patience = 0
[[members]]
architecture = "seed_cnn"
name = "seed_cnn"
seeds = {args.seeds}
[ensembles]
methods = ["average-all", "seeds"]
[report]
enabled = false
"""


def run(mode_args: list[str], profile: Path, out: Path, args, env: dict) -> dict:
    load = os.getloadavg()[0]
    start = time.monotonic()
    cmd = [sys.executable, "-m", "benchmark.cli", "run", str(profile), "--out", str(out)]
    cmd += ["--data-dir", args.data_dir, *mode_args]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    members = [json.loads(p.read_text()) for p in out.glob("members/*/metrics.json")]
    board = (out / "leaderboard.csv").read_text().splitlines()
    return {
        "wall": wall,
        "train": sum(m.get("train_seconds", 0) for m in members),
        "members": len(members),
        "load_before": load,
        "load_after": os.getloadavg()[0],
        "best": board[1].split(",")[1] if len(board) > 1 else "",
    }


def packing_estimates(profile: Path, args, slots=(1, 2, 4, 8)) -> dict[int, tuple[float, float]]:
    """The plan's estimate (probes on this machine) packed on 1, 2, 4, 8 slots: (wall, serial)."""
    from benchmark.config.profiles import load_profile
    from benchmark.data.datasets import load_for_profile
    from benchmark.plan import packing
    from benchmark.plan import tasks as plan

    prof = load_profile(profile)
    data = load_for_profile(prof.data, args.data_dir, prof.seed)
    tasks = plan.make_plan(prof, data, prof.seed, None, True)
    return {n: (packing.pack(tasks, n).makespan, packing.pack(tasks, n).serial) for n in slots}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-dir", default=os.environ.get("ZOOBENCH_DATA", "../shared/data/cifar10-jpg")
    )
    parser.add_argument("--train", type=int, default=4000)
    parser.add_argument("--val", type=int, default=1000)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--no-write", action="store_true", help="print; write no result")
    args = parser.parse_args()

    from benchmark.formatting import duration

    tmp = Path(tempfile.mkdtemp(prefix="zoobench-ray-bench-"))
    profile = tmp / "ray-bench.toml"
    profile.write_text(profile_toml(args))
    env = {**os.environ, "PYTHONPATH": str(REPO), "ZOOBENCH_CACHE": str(tmp / "cache")}
    rows, results = [], {}
    for i, (mode, mode_args) in enumerate(MODES.items()):
        r = results[mode] = run(mode_args, profile, tmp / f"run{i}", args, env)
        print(f"{mode}: {duration(r['wall'])} wall, members' training {duration(r['train'])}")
        rows.append(
            {
                "mode": mode,
                "wall time": duration(r["wall"]),
                "wall s": round(r["wall"], 1),
                "members' train s (sum)": round(r["train"], 1),
                "load avg before / after": f"{r['load_before']:.1f} / {r['load_after']:.1f}",
            }
        )
    os.environ["ZOOBENCH_CACHE"] = str(tmp / "cache")
    estimates = packing_estimates(profile, args)
    base = estimates[1][0]
    packed = ", ".join(
        f"{n} slot{'s' if n > 1 else ''} ~{duration(w)} ({base / w:.1f}x)"
        for n, (w, _) in estimates.items()
    )
    print("plan's packing:", packed)
    plain = results["plain (no Ray)"]["wall"]
    two = results["Ray, 2 workers (1 CPU a member)"]["wall"]
    one = results["Ray, 1 worker (2 CPUs a member)"]["wall"]
    notes = [
        f"{args.seeds} members (seed_cnn, {args.seeds} seeds) on {args.train:,} train / "
        f"{args.val:,} val / {args.test:,} test pictures, {args.epochs} epochs, batch 128; each "
        "mode a fresh `zoobench run` (start-up, the local Ray instance and the ensembles included).",
        f"2 Ray workers vs 1: {one / two:.2f}x; vs the plain run: {plain / two:.2f}x. Both Ray "
        "modes share the same 2 cores, so little gain is expected here: 2 workers of 1 thread "
        "each against 1 worker of 2 threads.",
        f"What the plan's packing gives on more slots (probes on this machine, one member a "
        f"slot): {packed}. With {args.seeds} equal members, {args.seeds} slots is the most that "
        "helps; a cluster of N such machines (N slots) divides the members' part of the wall "
        "time by up to N; ensembles, robustness and the report stay on the driver.",
        "The machine was shared with other engineers' work throughout (load average in the "
        "table, 2 cores): the figures are indicative, not a clean measurement.",
    ]
    if args.no_write:
        print("\n".join(notes))
        return
    from results_io import write_result

    path = write_result(
        "ray-workers",
        title="One CPU-sized profile plainly and on a local Ray instance with 1 and 2 workers",
        command="python scripts/bench_ray.py " + " ".join(sys.argv[1:]),
        data_source=f"CIFAR-10 (JPEG copy) at {args.data_dir}, subset",
        table=rows,
        notes=notes,
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
