"""``zoobench run``: train, tune, ensemble and report a profile into a run folder (resumable)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_commands(sub) -> None:
    run = sub.add_parser(
        "run",
        help="run a benchmark profile (default cpu-quick): train, tune, ensemble, report",
        description="Run a benchmark profile into runs/NAME. Rerunning the same command resumes it.",
    )
    run.add_argument(
        "profile",
        nargs="?",
        default=None,
        help="a shipped profile (smoke, cpu-quick, cpu-tour, standard, full, ...) or a .toml path "
        "(default cpu-quick)",
    )
    run.add_argument("--out", help="run folder (default runs/<profile name>)")
    run.add_argument(
        "--data-dir", help="dataset folder (default: the profile's, $ZOOBENCH_DATA, Keras's cache)"
    )
    run.add_argument(
        "--seed",
        type=int,
        help="seed of the split, the members and the search (default: profile's)",
    )
    run.add_argument(
        "--budget", help="wall-time budget, e.g. 90s, 30m, 1h30m (default: the profile's)"
    )
    run.add_argument(
        "--plan", action="store_true", help="print the plan and its estimated cost; train nothing"
    )
    run.add_argument("--fresh", action="store_true", help="delete the run folder and start over")
    run.add_argument(
        "--tensorboard", action="store_true", help="TensorBoard logs under runs/NAME/tensorboard/ID"
    )
    run.add_argument(
        "--strategy",
        choices=("none", "mirrored", "multi-worker"),
        default="none",
        help="tf.distribute strategy for training each member (default none)",
    )
    dist = run.add_mutually_exclusive_group()
    dist.add_argument(
        "--chief",
        metavar="[HOST:]PORT",
        help="serve distributed Keras Tuner searches (binds 127.0.0.1 unless HOST is given)",
    )
    dist.add_argument("--worker", metavar="HOST:PORT", help="run the trials of a chief's searches")
    run.add_argument("--tuner-id", help="this worker's id (default worker-<pid>)")
    run.add_argument(
        "--token",
        help="shared secret workers present to the chief; prefer $ZOOBENCH_TOKEN, which other "
        "users cannot read from the process list (zoobench never writes the value down; a chief "
        "beyond loopback without one prints a new one)",
    )
    run.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="train the members as tasks on a Ray cluster: HOST:PORT of `ray start --head`, 'auto', "
        "or 'local' (a Ray instance on this machine); --out must be on a filesystem every node "
        "shares (pip install 'zoobench[ray]'; docs/running.md)",
    )
    run.add_argument(
        "--ray-task-cpus",
        type=int,
        default=1,
        metavar="N",
        help="CPUs each member's task asks for on a cluster without GPUs (default 1)",
    )
    run.add_argument(
        "--ray-search-workers",
        type=int,
        default=0,
        metavar="N",
        help="spread each search's trials over N Ray workers that join its Keras Tuner chief "
        "(default 0: a search is one task)",
    )
    run.add_argument(
        "--mlflow",
        metavar="URI",
        help="log the run to MLflow: a parent run, a child run per leaderboard row "
        "(e.g. sqlite:///mlruns.db or http://host:5000; pip install 'zoobench[mlflow]')",
    )
    run.set_defaults(func=cmd_run)

    refit = sub.add_parser(
        "refit",
        help="retrain a run's best (or any row's) configuration on train + validation",
        description="Retrain the chosen configuration's from-scratch members on train + validation "
        "for the epochs validation chose; pretrained members are kept. The leaderboard and the "
        "exported best do not change (selection stays on validation); the refit is kept in "
        "RUN/refit/NAME and predicts with `--model refit:NAME`.",
    )
    refit.add_argument("run", metavar="RUN", help="run folder")
    refit.add_argument(
        "--model", default="best", help="best (default), a member ID or an ensemble name"
    )
    refit.add_argument("--data-dir", help="the run's data, when it moved since the run")
    refit.set_defaults(func=cmd_refit)


def cmd_run(args: argparse.Namespace) -> int:
    import logging

    from benchmark.config.profiles import load_profile
    from benchmark.errors import ZoobenchError
    from benchmark.formatting import duration, parse_duration
    from benchmark.store import runfolder
    from benchmark.train import distributed

    if not getattr(args, "verbose", False):  # TensorFlow's retracing notes are not for people
        logging.getLogger("tensorflow").setLevel(logging.ERROR)
    budget = parse_duration(args.budget)
    role = distributed.configure_tuning(args.chief, args.worker, args.tuner_id, args.token)
    profile = load_profile(args.profile)

    from benchmark.run.runner import Runner

    def say(line: str) -> None:
        print(line, flush=True)

    out = args.out or f"runs/{profile.name}"
    runfolder.check_out(Path(out), fresh=args.fresh)  # said before any data is loaded, --plan too
    if args.ray and role:
        raise ZoobenchError(
            "--ray: not with --chief / --worker (--ray-search-workers spreads searches on the cluster)"
        )
    if args.ray and args.strategy != "none":
        raise ZoobenchError(
            f"--ray: not with --strategy {args.strategy} (each member trains in one Ray task)"
        )
    if args.ray:
        from benchmark.run import cluster as cluster_mod

        cluster_mod.check_address(args.ray)  # a wrong address: one line before anything loads
    tracker = None
    if args.mlflow and not args.plan:
        from benchmark.run.tracking import Tracker

        tracker = Tracker(args.mlflow)
    cluster = (
        cluster_mod.connect(
            args.ray, task_cpus=args.ray_task_cpus, search_workers=args.ray_search_workers
        )
        if args.ray
        else None
    )
    runner = Runner(
        profile,
        out,
        data_dir=args.data_dir,
        seed=args.seed,
        budget_seconds=budget,
        fresh=args.fresh,
        tensorboard=args.tensorboard,
        strategy=args.strategy,
        progress=say,
        verbose=2,
        cluster=cluster,
        tracker=tracker,
    )
    try:
        if args.plan:
            _print_plan(runner, profile, duration)
            return 0
        if role:
            print(f"distributed tuning: this process is the {role}", file=sys.stderr)
        runner.run()
    finally:
        if cluster is not None:
            cluster.shutdown()
    return 0


def _print_plan(runner, profile, duration) -> None:
    print(f"profile {profile.name}: {profile.description} ({profile.source})")
    if runner.cluster is not None:
        print(runner.cluster.describe())
    d = runner.data
    print(
        f"data: {d.source}, train {len(d.y_train):,} / val {len(d.y_val):,} / test {len(d.y_test):,}"
    )
    tasks = runner.plan(estimate=True)
    for line in runner.describe_plan(tasks):
        print(line)
    if runner.budget_seconds is None:
        print("no budget: everything runs (set one with --budget)")
    print(f"(planning took {duration(runner.clock.elapsed)}; nothing was trained)")


def cmd_refit(args: argparse.Namespace) -> int:
    from benchmark.run.refit import refit_full

    record = refit_full(
        args.run, args.model, data_dir=args.data_dir, progress=lambda line: print(line, flush=True)
    )
    print(f"predict with it: zoobench predict IMAGES --run {args.run} --model refit:{args.model}")
    return 0 if record else 1
