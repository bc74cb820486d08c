"""The Python API: run a benchmark, read its leaderboard and get the winner, in three lines.

from benchmark import Benchmark
bench = Benchmark("smoke", out="runs/smoke", data_dir="...")
bench.run()
bench.leaderboard().head()      # pandas, sorted by validation accuracy
bench.best().predict(images)    # the best member or ensemble

After the leaderboard, in the AutoGluon spirit (``model`` is "best", a member ID, an ensemble name
or "refit:<name>"):

bench.predict(images) / bench.predict_proba(images)      # uint8 RGB (N, H, W, 3) or a list
bench.evaluate(images, labels)       # accuracy, macro P/R/F1, confusion matrix
bench.tuner_results()                # every Keras Tuner trial; bench.best_hyperparameters()
bench.refit_full()                   # the best configuration retrained on train + validation
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.store.runstore import RunStore

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
        from benchmark.config.profiles import Profile, load_profile
        from benchmark.formatting import parse_duration

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
        record = store.run_record()
        bench.seed = record.seed if record else None
        bench.budget_seconds = record.budget_seconds if record else None
        bench.runner_options = {}
        bench.store = store
        return bench

    def runner(self):
        from benchmark.run.runner import Runner

        if self.profile is None:
            raise ValueError(
                "a loaded run has no profile to run again; use Benchmark(profile, out=...)"
            )
        return Runner(
            self.profile,
            self.out,
            data_dir=self.data_dir,
            seed=self.seed,
            budget_seconds=self.budget_seconds,
            **self.runner_options,
        )

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

    def predictor(self, model: str = "best"):
        """The predictor for ``model``, loaded once and kept (models load in seconds, not free)."""
        cache = self.__dict__.setdefault("_predictors", {})
        if model not in cache:
            cache[model] = self.best(model)
        return cache[model]

    def predict_proba(self, images, model: str = "best", tta: bool = False) -> np.ndarray:
        """(N, classes) probabilities for raw uint8 RGB images of any size."""
        return self.predictor(model).predict_proba(images, tta=tta)

    def predict(self, images, model: str = "best", tta: bool = False) -> np.ndarray:
        """Integer labels (``class_names[label]``) for raw uint8 RGB images of any size."""
        return self.predict_proba(images, model=model, tta=tta).argmax(axis=1)

    def evaluate(self, images, labels, model: str = "best", tta: bool = False) -> dict[str, Any]:
        """Accuracy, macro precision / recall / F1 and the confusion matrix on labelled images.

        ``labels`` are integer class indices (``class_names`` order) or one-hot rows.
        """
        from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

        from benchmark.errors import ZoobenchError
        from benchmark.metrics import accuracy

        labels = np.asarray(labels)
        if labels.ndim == 2:
            labels = labels.argmax(axis=1)
        predictor = self.predictor(model)
        classes = len(predictor.class_names)
        if len(labels) != len(images):
            raise ZoobenchError(f"evaluate: {len(images)} images but {len(labels)} labels")
        if labels.size and (labels.min() < 0 or labels.max() >= classes):
            raise ZoobenchError(f"evaluate: labels must be class indices 0..{classes - 1}")
        probs = predictor.predict_proba(images, tta=tta)
        predicted = probs.argmax(axis=1)
        precision, recall, f1, _ = precision_recall_fscore_support(
            labels, predicted, labels=np.arange(classes), average="macro", zero_division=0
        )
        return {
            "model": predictor.description,
            "images": int(len(labels)),
            "accuracy": accuracy(predicted, labels),
            "precision_macro": float(precision),
            "recall_macro": float(recall),
            "f1_macro": float(f1),
            "confusion_matrix": confusion_matrix(labels, predicted, labels=np.arange(classes)),
            "class_names": list(predictor.class_names),
        }

    def tuner_results(self):
        """Every Keras Tuner trial of the run's searches, best first per search (a DataFrame)."""
        from benchmark.store.tuner_results import tuner_results

        return tuner_results(self.out)

    def best_hyperparameters(self) -> dict[str, dict[str, Any]]:
        """Each search's best trial's hyperparameters, by search (the member it tuned)."""
        from benchmark.store.tuner_results import best_hyperparameters

        return best_hyperparameters(self.out)

    def refit_full(self, model: str = "best", data_dir: str | None = None) -> dict[str, Any]:
        """Retrain ``model``'s configuration on train + validation (``benchmark.run.refit``).

        Selection is unchanged (it stays on validation); the refit predicts as
        ``predict(images, model="refit:<model>")`` and its record holds both test accuracies.
        """
        from benchmark.run.refit import refit_full

        record = refit_full(self.out, model, data_dir=data_dir or self.data_dir)
        self.__dict__.get("_predictors", {}).pop(f"refit:{model}", None)
        return record
