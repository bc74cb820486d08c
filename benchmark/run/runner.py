"""The benchmark runner: a profile's plan carried out into the run store, then ensembles and report.

    Runner(load_profile("smoke"), "runs/smoke").run()

A run is resumable: each member's folder is named by a hash of what defines it, and is complete
once its ``metrics.json`` exists. A rerun keeps complete members (and finished tuner trials),
discards incomplete folders and trains what is missing, so an interrupted run ends with the same
leaderboard as an unbroken one (with the same seed, and op determinism where the profile asks).
Test probabilities are stored for the report; nothing here selects with test labels.

The parts: ``benchmark.plan.tasks`` (tasks, costs, the budget), ``benchmark.run.members`` (a member's ID,
config, training and storing), ``benchmark.run.searches`` (Keras Tuner), ``benchmark.store.provenance``
(run.json and the data arrays). This module only sequences them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from benchmark.config.profiles import Profile
from benchmark.errors import short_error
from benchmark.formatting import duration, utc_now
from benchmark.plan import budget as budget_mod
from benchmark.plan import tasks as plan_mod
from benchmark.plan.tasks import Task
from benchmark.run.members import MemberOutcome, MemberTrainer
from benchmark.store import provenance, runfolder
from benchmark.store.runstore import RunStore
from zoo import backend

log = logging.getLogger(__name__)

Progress = Callable[[str], None]

__all__ = ["MemberOutcome", "Runner", "Task"]


class Runner:
    """Runs one profile into one run folder; see the module docstring."""

    def __init__(
        self,
        profile: Profile,
        out: str | os.PathLike,
        *,
        data_dir: str | None = None,
        seed: int | None = None,
        budget_seconds: float | None = None,
        fresh: bool = False,
        tensorboard: bool = False,
        strategy: str | None = None,
        progress: Progress | None = None,
        verbose: int = 0,
        data=None,
        cluster=None,
        tracker=None,
    ):
        self.profile = profile
        self.store = RunStore(out)
        self.data_dir = data_dir or profile.data.get("data_dir")
        self.seed = profile.seed if seed is None else int(seed)
        self.budget_seconds = (
            budget_seconds if budget_seconds is not None else profile.budget_seconds
        )
        self.fresh = fresh
        self.tensorboard = tensorboard
        self.strategy_name = strategy
        self.progress: Progress = progress or (lambda line: log.info("%s", line))
        self.verbose = verbose
        self._data = data
        # benchmark.run.cluster.Cluster: members as Ray tasks; benchmark.run.tracking.Tracker: MLflow
        self.cluster = cluster
        self.tracker = tracker
        self.clock = budget_mod.Clock(self.budget_seconds)
        self.tasks: list[Task] = []
        self.report_path: Path | None = None
        self._members: MemberTrainer | None = None
        self._started_at = ""
        self._planned_at = 0.0

    # ---- data ---------------------------------------------------------------------------------------
    @property
    def data(self):
        if self._data is None:
            from benchmark.data.datasets import load_for_profile

            self._data = load_for_profile(self.profile.data, self.data_dir, self.seed)
        return self._data

    @property
    def members(self) -> MemberTrainer:
        """Trains and stores this run's members (``benchmark.run.members``)."""
        if self._members is None:
            self._members = MemberTrainer(
                self.store,
                self.data,
                seed=self.seed,
                clock=self.clock,
                progress=self.progress,
                tensorboard=self.tensorboard,
                verbose=self.verbose,
            )
        return self._members

    @property
    def outcomes(self) -> list[MemberOutcome]:
        return self.members.outcomes

    # ---- the plan -----------------------------------------------------------------------------------
    def plan(self, estimate: bool = True) -> list[Task]:
        """Expand the profile and fit it to the budget; every task carries its decision."""
        remaining = None if self.budget_seconds is None else max(0.0, self.clock.remaining)
        self.tasks = plan_mod.make_plan(
            self.profile, self.data, self.seed, remaining, estimate, slots=self.slots
        )
        return self.tasks

    @property
    def slots(self) -> int:
        """Tasks that run at once: the cluster's slots, else one."""
        return self.cluster.slots if self.cluster is not None else 1

    def describe_plan(self, tasks: list[Task]) -> list[str]:
        return plan_mod.describe(tasks, self.budget_seconds, slots=self.slots)

    # ---- the run ------------------------------------------------------------------------------------
    def run(self) -> RunStore:
        """Train everything the plan keeps, then ensembles and report; returns the store."""
        from benchmark.train import distributed

        role = distributed.role()
        if role == "worker":  # a worker writes only its trials; the chief holds the folder
            return self._run(role)
        runfolder.check_out(self.store.root, fresh=self.fresh)
        with runfolder.locked(self.store.root):
            return self._run(role)

    def _run(self, role: str | None) -> RunStore:
        from benchmark.run.searches import run_search
        from benchmark.train import distributed

        if role != "worker":  # before the folder is touched: a typo must not claim it as a run
            plan_mod.check_members(self.profile, self.data)
            if self.profile.robustness_enabled and self.profile.robustness_config.get("tent"):
                from benchmark.run.robustness import check_tent_backend

                check_tent_backend()  # TENT on a backend it does not support: refused before training
        self._start(role)
        d = self.data
        self.progress(
            f"run {self.store.root} ({self.profile.name}, seed {self.seed}, "
            f"data {d.source}: {len(d.y_train)}/{len(d.y_val)}/{len(d.y_test)})"
        )
        tasks = self.plan(estimate=self.budget_seconds is not None)
        self._planned_at = self.clock.elapsed  # the plan's pace is measured from here
        for line in self.describe_plan(tasks):
            self.progress(line)
        self.members.strategy = distributed.make_strategy(self.strategy_name)
        if role is not None:  # chief and workers meet search by search: profile order, no re-plans
            tasks.sort(key=lambda t: t.order)
        if self.cluster is not None:
            self._run_on_cluster(tasks)
            self._finish()
            return self.store
        replanner = plan_mod.Replanner(tasks, d, self.budget_seconds, replanning=role is None)
        for i, task in enumerate(tasks, 1):
            if task.dropped:
                self.progress(f"dropped {task.label}: {task.decision.note}")
                continue
            if self.clock.expired:
                left = [t.label for t in tasks[i - 1 :]]
                self.progress(f"budget reached: not started: {', '.join(left)}")
                break
            self.progress(self._status_line(i, len(tasks), task))
            started, seen = self.clock.elapsed, len(self.members.outcomes)
            if task.tuned:
                # The k-th tuned member of the profile, dropped ones counted: a chief and a worker
                # whose budgets drop different members still meet on the same port per search.
                search_index = sum(1 for t in tasks if t.tuned and t.order < task.order)
                with distributed.search_port(search_index):
                    run_search(self.members, task, role, self.seed)
            elif role != "worker":
                self.members.run(task)
            if role != "worker":  # the real time and what it trained: the pace, a re-plan
                trained = [
                    self.store.member(o.id).metrics
                    for o in self.members.outcomes[seen:]
                    if o.status == "done" and not o.kept
                ]
                line = replanner.finished(
                    i - 1, self.clock.elapsed - started, trained, self.clock.remaining
                )
                if line:
                    self.progress(line)
        if role == "worker":
            self.progress("worker: all searches finished")
            return self.store
        self._finish()
        return self.store

    def _run_on_cluster(self, tasks: list[Task]) -> None:
        """The kept tasks as Ray jobs (``benchmark.run.cluster``); they run side by side, so the
        plan is not re-fitted as they go (each member still stops at the budget's deadline)."""
        from benchmark.run import cluster
        from benchmark.run.members import MemberOutcome

        self.progress(self.cluster.describe())
        for task in tasks:
            if task.dropped:
                self.progress(f"dropped {task.label}: {task.decision.note}")
        outcomes = cluster.run_jobs(self, tasks, self.cluster, self.progress)
        self.members.outcomes.extend(MemberOutcome(**o) for o in outcomes)

    def _status_line(self, i: int, n: int, task: Task) -> str:
        """``[3/7] 4m12s elapsed, 25m48s of budget left, plan 41% done, ETA ~9m (12% slower than
        planned): training X``: the overall progress line, one per task."""
        parts = [f"[{i}/{n}] {duration(self.clock.elapsed)} elapsed"]
        if self.budget_seconds:
            parts.append(f"{duration(max(0, self.clock.remaining))} of budget left")
        note = plan_mod.progress_note(self.tasks, i - 1, self.clock.elapsed - self._planned_at)
        if note:
            parts.append(note)
        return f"{', '.join(parts)}: {'tuning' if task.tuned else 'training'} {task.label}"

    def _start(self, role: str | None) -> None:

        if self.profile.deterministic:
            backend.enable_determinism()
        backend.set_random_seed(self.seed)
        if role == "worker":
            return
        root = self.store.root
        if self.fresh and root.is_dir():
            runfolder.remove_run_files(root)
        identity = provenance.check_identity(self.store, self.profile, self.seed, self.data)
        runfolder.mark(root, identity)
        self.store.recover_ensembles()
        for folder in list(self.store.iter_incomplete()):
            log.info("discarding the incomplete %s", folder)
            self.store.discard_incomplete(folder)
        self._started_at = utc_now()
        self._write_run_json(finished=False)
        provenance.write_data_arrays(self.store, self.data, self.seed)

    def _write_run_json(self, finished: bool) -> None:
        self.store.write_run(
            provenance.run_record(
                self.store,
                self.profile,
                self.seed,
                self.data,
                budget_seconds=self.budget_seconds,
                started_at=self._started_at,
                wall_seconds=self.clock.elapsed if finished else None,
                strategy=self.strategy_name,
            )
        )

    # ---- the end ------------------------------------------------------------------------------------
    def _finish(self) -> None:
        if self.profile.ensembles_enabled:
            self._ensembles()
        else:
            self._export_best()
        if self.profile.robustness_enabled:
            self._robustness()
        # run.json records the finish first, so the report shows the wall time and a finished run.
        self._write_run_json(finished=True)
        from reports.leaderboard import console_lines, leaderboard, save_leaderboard

        board = None
        if self.profile.report_enabled:
            report = self._report()
            if report is not None:
                self.report_path, board = report.index, report.board
        if board is None:  # no report: the leaderboard is still scored once and saved
            board = leaderboard(self.store)
            if len(board):
                save_leaderboard(self.store, board)
        if len(board):
            self.progress("leaderboard (top 10, best first by validation accuracy):")
            for line in console_lines(board, self.store):
                self.progress("  " + line)
        if self.report_path:
            self.progress(f"report: {self.report_path}")
        if self.tracker is not None:
            self._track(board)
        self.progress(f"finished in {duration(self.clock.elapsed)}: {self.store.root}")

    def _track(self, board) -> None:
        """Log the run to MLflow (``benchmark.run.tracking``); a failure costs only the logging."""
        try:
            logged = self.tracker.log_run(self.store, board, report=self.report_path)
            self.progress(f"mlflow: {logged}")
        except Exception as exc:  # noqa: BLE001 - the run is finished and stored either way
            where = self._traceback_file(exc, "logging to MLflow")
            self.progress(f"mlflow: FAILED ({short_error(exc)}); the run is kept{where}")

    def _ensembles(self) -> None:
        ok = [m for m in self.store.members(notes=[]) if m.ok]  # damaged ones: left out
        if not ok:  # with one member there is no ensemble, but it is still exported as the best
            self.progress("ensembles: no finished member; skipped")
            return
        try:
            from ensembles import build_ensembles

            built = build_ensembles(self.store, self._ensemble_config(), self.seed)
            self.progress(f"ensembles: {len(built or [])} built")
        except ImportError as exc:
            self.progress(f"ensembles: unavailable ({exc}); skipped")
        except Exception as exc:  # noqa: BLE001 - the members are stored; the report still comes
            where = self._traceback_file(exc, "building the ensembles")
            self.progress(f"ensembles: FAILED ({short_error(exc)}); the members are kept{where}")

    def _export_best(self) -> None:
        """Without ensembles the best member is still the run's best: ``predict`` and ``export``
        use it by default (ensembles/best/, as ``build_ensembles`` writes it)."""
        try:
            from ensembles.build import select_best
            from ensembles.export import write_best

            best = select_best(
                [m for m in self.store.members(notes=[]) if m.ok], self.store.ensembles(notes=[])
            )
            if best is not None:
                write_best(self.store, best)
        except Exception as exc:  # noqa: BLE001 - the members are stored; predict can name one
            where = self._traceback_file(exc, "exporting the best member")
            self.progress(f"best: FAILED ({short_error(exc)}); the members are kept{where}")

    def _robustness(self) -> None:
        """Corruption, AdaBN and FGSM accuracies of every entry (benchmark.run.robustness)."""
        if self.clock.expired:
            self.progress("robustness: budget reached; skipped (a rerun measures it)")
            return
        try:
            from benchmark.run.robustness import measure_run

            start = self.clock.elapsed
            n = measure_run(
                self.store,
                self.profile.robustness_config,
                self.seed,
                progress=self.progress,
                expired=lambda: self.clock.expired,
            )
            self.progress(f"robustness: {n} measured in {duration(self.clock.elapsed - start)}")
        except Exception as exc:  # noqa: BLE001 - the members are stored; the report still comes
            where = self._traceback_file(exc, "measuring robustness")
            self.progress(f"robustness: FAILED ({short_error(exc)}); the members are kept{where}")

    def _ensemble_config(self) -> dict:
        return {k: v for k, v in self.profile.ensembles.items() if k != "enabled"}

    def _report(self):
        from reports.build import write_report

        self.progress("report: scoring the leaderboard and drawing the figures")
        try:
            return write_report(self.store)
        except Exception as exc:  # noqa: BLE001 - `zoobench report RUN` can rebuild it later
            where = self._traceback_file(exc, "building the report")
            self.progress(
                f"report: FAILED ({short_error(exc)}); "
                f"rebuild it with `zoobench report {self.store.root}`{where}"
            )
            return None

    def _traceback_file(self, exc: BaseException, what: str) -> str:
        """Keep ``exc``'s traceback in ``<run>/error.txt`` (the console gets one line); its note."""
        log.debug("%s failed", what, exc_info=exc)  # shown with --debug
        where = self.store.write_error(self.store.root, exc)
        return f" (traceback in {where})" if where else ""
