"""The Python API: run a benchmark, read its leaderboard and get the winner, in three lines.

from benchmark import Benchmark
bench = Benchmark("smoke", out="runs/smoke", data_dir="...")
bench.run()
bench.leaderboard().head()      # pandas, sorted by validation accuracy
bench.best().predict(images)    # the best member or ensemble
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

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
        """Members and ensembles as a DataFrame, best first (the order ``best()`` picks from)."""
        from reports.leaderboard import leaderboard

        return leaderboard(self.store)

    def best(self, model: str = "best"):
        """A predictor for the best member or ensemble (``ensembles.predictor.load_predictor``)."""
        from ensembles.predictor import load_predictor

        return load_predictor(self.out, model=model)

