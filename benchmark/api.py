"""The Python API: run a benchmark, read its leaderboard and get the winner, in three lines.

from benchmark import Benchmark
bench = Benchmark("smoke", out="runs/smoke", data_dir="...")
bench.run()
bench.leaderboard().head()      # pandas, sorted by validation accuracy
bench.best().predict(images)    # the best member or ensemble
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.store import RunStore

log = logging.getLogger(__name__)


class Benchmark:
    """One profile run into one folder (``runs/<profile name>`` by default)."""

    def __init__(
        self,
        profile: Any = "cpu-quick",
        out: str | os.PathLike | None = None,
        data_dir: str | None = None,
        seed: int | None = None,
        budget: str | float | None = None,
        **runner_options: Any,
    ):
        from benchmark.budget import parse_duration
        from benchmark.profiles import Profile, load_profile

        self.profile = profile if isinstance(profile, Profile) else load_profile(profile)
        self.out = Path(out) if out is not None else Path("runs") / self.profile.name
        self.data_dir = data_dir
        self.seed = seed
        self.budget_seconds = parse_duration(budget)
        self.runner_options = runner_options
        self.store = RunStore(self.out)

    @classmethod
    def load(cls, run_dir: str | os.PathLike) -> Benchmark:
        """A finished (or interrupted) run, for its leaderboard and predictor; nothing is retrained."""
        store = RunStore(run_dir)
        if not store.exists():
            raise FileNotFoundError(f"{run_dir} is not a zoobench run (no run.json)")
        bench = cls.__new__(cls)
        bench.profile = None
        bench.out = Path(run_dir)
        bench.data_dir = None
        meta = store.read_run()
        bench.seed = meta.get("seed")
        bench.budget_seconds = meta.get("budget_seconds")
        bench.runner_options = {}
        bench.store = store
        return bench

    def runner(self):
        from benchmark.runner import Runner

        if self.profile is None:
            raise ValueError(
                "a loaded run has no profile to run again; use Benchmark(profile, out=...)"
            )
        return Runner(self.profile, self.out, data_dir=self.data_dir, seed=self.seed,
                      budget_seconds=self.budget_seconds, **self.runner_options)  # fmt: skip

    def run(self) -> Benchmark:
        """Train, tune, ensemble and report (resuming whatever an earlier call left)."""
        self.runner().run()
        return self

    def leaderboard(self):
        """Members and ensembles as a DataFrame sorted by validation accuracy."""
        return leaderboard(self.store)

    def best(self, model: str = "best"):
        """A predictor for the best member or ensemble (``ensembles.predictor.load_predictor``)."""
        from ensembles.predictor import load_predictor

        return load_predictor(self.out, model=model)


def leaderboard(store: RunStore):
    """The reports package's leaderboard when installed, else a minimal one read from the store."""
    if importlib.util.find_spec("reports.leaderboard") is not None:
        try:
            from reports import leaderboard as lb

            fn = getattr(lb, "leaderboard", None) or getattr(lb, "build_leaderboard", None)
            if fn is not None:
                return fn(store)
        except Exception as exc:  # noqa: BLE001 - the minimal table still answers
            log.warning("reports.leaderboard failed (%s); using the minimal leaderboard", exc)
    return minimal_leaderboard(store)


def minimal_leaderboard(store: RunStore):
    """One row per member and ensemble: validation score (the sort key), test score, costs."""
    import pandas as pd

    try:
        y_test = store.labels("test")
    except FileNotFoundError:
        y_test = None
    rows = []
    for kind, entries in (("member", store.members()), ("ensemble", store.ensembles())):
        for e in entries:
            row = {"model": e.name, "kind": kind, "id": e.id, "status": e.status,
                   "val_accuracy": e.metrics.get("val_accuracy"), "test_accuracy": None}  # fmt: skip
            if e.ok and y_test is not None and (e.path / "test_probs.npy").is_file():
                row["test_accuracy"] = float(np.mean(np.argmax(e.probs("test"), axis=1) == y_test))
            for key in ("val_loss", "params", "flops", "train_seconds", "epochs",
                        "inference_images_per_second", "reason"):  # fmt: skip
                row[key] = e.metrics.get(key)
            rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    frame["val_accuracy"] = pd.to_numeric(frame["val_accuracy"])
    return frame.sort_values("val_accuracy", ascending=False, na_position="last").reset_index(
        drop=True
    )
