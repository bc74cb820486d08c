"""Keras Tuner searches over a member's architecture hp and the profile's common training hp.

The search space is the architecture's own (its builder's ``hp.Int`` / ``hp.Choice`` calls, with the
profile's fixed values pinned) plus the training settings the profile lets vary (``[tuner.search]``:
learning rate, optimizer, label smoothing, an augmentation policy by name...). The objective is
``val_accuracy``: the test split never enters a search. Projects live in ``runs/NAME/tuner/<key>``,
so a rerun reloads finished trials and retries the one that was interrupted.

Memory stays flat across trials because every trial starts with ``keras.backend.clear_session()``.
Distributed tuning is Keras Tuner's own chief/worker mode (``KERASTUNER_*`` environment variables).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import keras_tuner
import numpy as np

from benchmark import atomic
from benchmark.errors import ZoobenchError

log = logging.getLogger(__name__)

TRAIN_PREFIX = "train_"  # training hyperparameters in a trial's hp carry this prefix
AUGMENT_HP = TRAIN_PREFIX + "augment"
OBJECTIVE = "val_accuracy"
TRIAL_MODEL = "model.keras"
TRIAL_HISTORY = "history.csv"
TRIAL_COSTS = "costs.json"


class BudgetReached(Exception):
    """Raised between trials when the run's deadline has passed: the search ends cleanly."""


def declare_training_hps(
    hp: keras_tuner.HyperParameters,
    search: dict[str, Any],
    training: dict[str, Any],
    augment: list[dict[str, Any]],
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Register the searchable training settings in ``hp``; return the training and policy to use."""
    training = dict(training)
    for key, space in search.items():
        name = TRAIN_PREFIX + key
        if key == "augment":
            choice = hp.Choice(name, list(space))
            augment = list(space[choice])
        elif isinstance(space, list):
            training[key] = hp.Choice(name, space)
        else:
            lo, hi = space["min"], space["max"]
            sampling = space.get("sampling", "linear")
            if (
                isinstance(lo, int)
                and isinstance(hi, int)
                and not isinstance(space.get("step", 1), float)
            ):
                training[key] = hp.Int(name, lo, hi, step=space.get("step", 1), sampling=sampling)
            else:
                training[key] = hp.Float(
                    name, float(lo), float(hi), step=space.get("step"), sampling=sampling
                )
    return training, augment


def split_values(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A trial's hp values split into (architecture hp, training hp without the prefix)."""
    arch = {k: v for k, v in values.items() if not k.startswith(("tuner/", TRAIN_PREFIX))}
    train = {k[len(TRAIN_PREFIX) :]: v for k, v in values.items() if k.startswith(TRAIN_PREFIX)}
    return arch, train


class SpaceModel(keras_tuner.HyperModel):
    """Declares the search space for the oracle: ``declare(hp)`` registers every hp (and may build)."""

    def __init__(self, declare: Callable[[keras_tuner.HyperParameters], Any]):
        super().__init__()
        self._declare = declare

    def build(self, hp: keras_tuner.HyperParameters):
        keras.backend.clear_session()
        model = self._declare(hp)
        return model if model is not None else keras.Sequential()


class ResumableOracle:
    """Oracle state that survives ``kill -9`` and reloads exactly as an unbroken search holds it.

    Keras Tuner as shipped breaks a repeated or resumed search four ways, each fixed here: it reads
    seed 0 as "no seed" (``seed or random.randint(...)``), so two runs with ``--seed 0`` searched
    different trials (the seed is shifted by one: every seed is a seed); it writes ``oracle.json``
    and ``trial.json`` in place (a kill mid-write leaves half a file); it reloads trials in the
    file system's listing order, and that order breaks ties between equal scores in
    ``get_best_trials``; and a kill between a new trial's ``trial.json`` and ``oracle.json`` leaves
    a trial the oracle never recorded, counted against ``max_trials`` but never run. Mixed in
    before a Keras Tuner oracle class.
    """

    def __init__(self, *args, seed: int = 0, **kwargs):
        super().__init__(*args, seed=int(seed) + 1, **kwargs)

    def save(self) -> None:
        from benchmark import atomic

        atomic.write_text(self._get_oracle_fname(), json.dumps(self.get_state()))

    def _save_trial(self, trial) -> None:
        from benchmark import atomic

        path = os.path.join(self._get_trial_dir(trial.trial_id), "trial.json")
        atomic.write_text(path, json.dumps(trial.get_state()))

    def reload(self) -> None:
        super().reload()
        recorded = set(self.start_order)
        for trial_id in [t for t in self.trials if t not in recorded]:
            # Created, but the kill came before oracle.json recorded it: the oracle's saved state
            # (seed, trial count) recreates the very same trial when the search goes on.
            log.info("trial %s was never recorded by the oracle: it starts over", trial_id)
            del self.trials[trial_id]
            shutil.rmtree(self._get_trial_dir(trial_id), ignore_errors=True)
        self.trials = {t: self.trials[t] for t in self.start_order if t in self.trials}


class RandomSearchOracle(ResumableOracle, keras_tuner.oracles.RandomSearchOracle):
    pass


class DefaultsFirstOracle(RandomSearchOracle):
    """Random search whose first trial is the space's defaults: a known-good baseline, so a search
    of one trial is the default model rather than a random draw."""

    def populate_space(self, trial_id: str) -> dict[str, Any]:
        if not self.start_order:
            return {"status": "RUNNING", "values": dict(self.hyperparameters.values)}
        return super().populate_space(trial_id)


class GridSearchOracle(ResumableOracle, keras_tuner.oracles.GridSearchOracle):
    pass


class BayesianOptimizationOracle(ResumableOracle, keras_tuner.oracles.BayesianOptimizationOracle):
    pass


class HyperbandOracle(ResumableOracle, keras_tuner.oracles.HyperbandOracle):
    pass


def make_oracle(settings: dict[str, Any], fixed: keras_tuner.HyperParameters, seed: int):
    """The oracle named by ``settings['algorithm']``; ``fixed`` pins the profile's own hp values."""
    objective = keras_tuner.Objective(OBJECTIVE, direction="max")
    common = {
        "objective": objective,
        "hyperparameters": fixed,
        "tune_new_entries": True,
        "allow_new_entries": True,
        "seed": seed,
    }
    algorithm = settings["algorithm"]
    if algorithm == "random":
        return RandomSearchOracle(max_trials=settings["max_trials"], **common)
    if algorithm == "grid":
        return GridSearchOracle(max_trials=settings["max_trials"], **common)
    if algorithm == "bayesian":
        return BayesianOptimizationOracle(
            max_trials=settings["max_trials"],
            num_initial_points=min(2, settings["max_trials"]),
            **common,
        )
    if algorithm == "hyperband":
        oracle = HyperbandOracle(
            max_epochs=max(2, settings["epochs"]),
            factor=settings.get("hyperband_factor", 3),
            hyperband_iterations=1,
            **common,
        )
        # Keras Tuner's Hyperband takes no max_trials, but its Oracle honours the attribute: the
        # profile's max_trials (and the budget planner's cut) bound every algorithm alike.
        oracle.max_trials = settings["max_trials"]
        return oracle
    raise ZoobenchError(f"tuner.algorithm: unknown algorithm {algorithm!r}")


def trial_epochs(settings: dict[str, Any]) -> list[int]:
    """Epochs of each trial the search in ``settings`` will run, in order (for cost estimates).

    Random, grid and Bayesian searches train ``max_trials`` trials of ``epochs``. Hyperband runs
    its brackets (largest first), each round's trials at that round's epochs, from the oracle's own
    schedule, cut at ``max_trials``; zoobench trains every Hyperband trial from scratch.
    """
    if settings["algorithm"] != "hyperband":
        return [int(settings["epochs"])] * int(settings["max_trials"])
    oracle = make_oracle(settings, keras_tuner.HyperParameters(), seed=0)
    schedule = []
    for bracket in reversed(range(oracle._get_num_brackets())):
        for round_num in range(oracle._get_num_rounds(bracket)):
            size = oracle._get_size(bracket, round_num)
            schedule += [oracle._get_epochs(bracket, round_num)] * size
    return schedule[: int(settings["max_trials"])]


class AtomicTunerState:
    """Mixed in before a Keras Tuner tuner class: its state file is written atomically too."""

    def save(self) -> None:
        from benchmark import atomic

        if not self._is_worker():
            self.oracle.save()
        atomic.write_text(self._get_tuner_fname(), json.dumps(self.get_state()))


class ResumableTuner(AtomicTunerState, keras_tuner.Tuner):
    """``keras_tuner.Tuner`` with atomic state; pair it with a :class:`ResumableOracle`."""


class HistoryTuner(ResumableTuner):
    """:class:`ResumableTuner` that also keeps each trial's per-epoch history (``history.json`` in
    its folder), which Keras Tuner's oracle does not (it records the best epoch only): the
    feature-extraction head search keeps its best trial's head and needs that history."""

    HISTORY = "history.json"

    def run_trial(self, trial, *args, **kwargs):
        results = super().run_trial(trial, *args, **kwargs)
        history = getattr(results[0], "history", None)
        if isinstance(history, dict):
            atomic.write_json(
                Path(self.get_trial_dir(trial.trial_id)) / self.HISTORY,
                {k: [float(v) for v in vals] for k, vals in history.items()},
            )
        return results

    def history(self, trial) -> dict[str, list[float]]:
        """``trial``'s per-epoch metrics, as ``History.history`` holds them."""
        path = Path(self.get_trial_dir(trial.trial_id)) / self.HISTORY
        return atomic.read_json(path) if path.is_file() else {}


TrainFn = Callable[..., Any]  # (hp, epochs=, seed=) -> benchmark.train.training.FitResult


class ZooTuner(AtomicTunerState, keras_tuner.engine.base_tuner.BaseTuner):
    """A Keras Tuner whose trials are trained by the benchmark's own training function.

    ``train_fn(hp, epochs=, seed=)`` returns a :class:`benchmark.train.training.FitResult`. The trial's
    model (best epoch) and history are kept in its folder so the best trial can become a member
    without retraining; :meth:`prune` removes the ones no member uses.
    """

    def __init__(
        self,
        oracle,
        space: SpaceModel,
        train_fn: TrainFn,
        *,
        directory: str | os.PathLike,
        project_name: str,
        epochs: int,
        seed: int = 0,
        deadline: float | None = None,
        overwrite: bool = False,
    ):
        self.train_fn = train_fn
        self.epochs = int(epochs)
        self.seed = int(seed)
        self.deadline = deadline
        super().__init__(
            oracle,
            hypermodel=space,
            directory=str(directory),
            project_name=project_name,
            overwrite=overwrite,
        )
        authenticate_client(self.oracle)

    # ---- one trial ------------------------------------------------------------------------------
    def run_trial(self, trial, *args, **kwargs) -> dict[str, float]:
        hp = trial.hyperparameters
        epochs = int(hp.values.get("tuner/epochs", self.epochs))
        seed = self.seed + _trial_number(trial.trial_id)
        log.info("trial %s started by %s: %s", trial.trial_id, self.tuner_id, hp.values)
        keras.backend.clear_session()
        result = self.train_fn(hp, epochs=epochs, seed=seed)
        if not result.ok:
            raise keras_tuner.errors.FailedTrialError(result.failed_reason)
        trial_dir = Path(self.get_trial_dir(trial.trial_id))
        trial_dir.mkdir(parents=True, exist_ok=True)
        from benchmark import atomic
        from benchmark.modelfile import save_model

        save_model(result.model, trial_dir / TRIAL_MODEL)
        with atomic.atomic_path(trial_dir / TRIAL_HISTORY) as tmp:
            result.history.to_csv(tmp, index=False)
        costs = {
            "train_seconds": result.train_seconds,
            "images_per_second": result.images_per_second,
        }
        atomic.write_json(trial_dir / TRIAL_COSTS, costs)
        history = result.history
        best = int(np.nanargmax(history[OBJECTIVE].to_numpy())) if OBJECTIVE in history else 0
        metrics = {OBJECTIVE: float(history[OBJECTIVE].iloc[best])}
        if "val_loss" in history:
            metrics["val_loss"] = float(history["val_loss"].iloc[best])
        log.info(
            "trial %s (%s) val_accuracy %.4f", trial.trial_id, self.tuner_id, metrics[OBJECTIVE]
        )
        del result
        keras.backend.clear_session()
        return metrics

    def pre_create_trial(self) -> None:
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise BudgetReached()

    # ---- the search -----------------------------------------------------------------------------
    def search(self, *fit_args, **fit_kwargs) -> None:
        """Run trials until the oracle stops or the budget ends; a chief serves the oracle instead."""
        from keras_tuner.src.distribute import utils as dist_utils

        if dist_utils.is_chief_oracle():
            self.save()
            serve_oracle(self.oracle)
            return
        try:
            super().search(*fit_args, **fit_kwargs)
        except BudgetReached:
            log.info("budget reached: the search of %s stops", self.project_name)

    def best_trials(self, k: int) -> list:
        """The ``k`` best completed trials; equal scores go to the earlier trial, as when unbroken."""
        completed = [t for t in self.oracle.trials.values() if t.status == "COMPLETED"]
        completed.sort(key=lambda t: (-t.score, _trial_number(t.trial_id)))
        return completed[:k]

    def trial_dir(self, trial_id: str) -> Path:
        return Path(self.get_trial_dir(trial_id))

    def prune(self, keep: set[str]) -> int:
        """Delete the saved models of trials that no member uses; returns how many went."""
        removed = 0
        project = Path(self.project_dir)
        for model in project.glob(f"trial_*/{TRIAL_MODEL}"):
            if model.parent.name.removeprefix("trial_") not in keep:
                model.unlink(missing_ok=True)
                removed += 1
        for checkpoint in project.glob("trial_*/checkpoint*"):
            if checkpoint.is_dir():
                shutil.rmtree(checkpoint, ignore_errors=True)
            else:
                checkpoint.unlink(missing_ok=True)
        return removed


def _trial_number(trial_id: str) -> int:
    digits = "".join(ch for ch in str(trial_id) if ch.isdigit())
    return int(digits) if digits else abs(hash(trial_id)) % 10_000


def _oracle_address() -> str:
    return f"{os.environ['KERASTUNER_ORACLE_IP']}:{os.environ['KERASTUNER_ORACLE_PORT']}"


def start_oracle_server(oracle, address: str, token: str | None):
    """Start the chief's gRPC server of ``oracle`` on ``address``; returns (server, servicer).

    With a ``token``, a call that does not present it is refused with UNAUTHENTICATED
    (:func:`benchmark.train.distributed.server_interceptors`).
    """
    from concurrent import futures

    import grpc
    from keras_tuner.src import protos
    from keras_tuner.src.distribute.oracle_chief import OracleServicer

    from benchmark.train import distributed

    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4),
        interceptors=distributed.server_interceptors(token),
    )
    servicer = OracleServicer(oracle)
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    if not server.add_insecure_port(address):
        raise ZoobenchError(f"distributed tuning: cannot listen on {address} (port in use?)")
    server.start()
    return server, servicer


def authenticate_client(oracle) -> None:
    """Make a worker's ``OracleClient`` present the token (``--token`` / ``ZOOBENCH_TOKEN``).

    Keras Tuner builds the worker's proxy inside ``BaseTuner.__init__`` and its constructor opens
    a plain ``grpc.insecure_channel`` to the chief, with no way to pass metadata or interceptors;
    so its ``stub`` (a private attribute: keras-tuner is pinned below 1.5) is replaced by one over
    :func:`benchmark.train.distributed.oracle_channel`, which adds the token and turns the chief's
    refusal into a one-line ZoobenchError. Anything but an ``OracleClient`` is left alone.
    """
    from keras_tuner.src import protos
    from keras_tuner.src.distribute.oracle_client import OracleClient

    from benchmark.train import distributed

    if isinstance(oracle, OracleClient):
        channel = distributed.oracle_channel(_oracle_address(), distributed.worker_token())
        oracle.stub = protos.get_service_grpc().OracleStub(channel)


def serve_oracle(oracle, poll_seconds: float = 0.5) -> None:
    """The chief's side of distributed tuning: serve ``oracle`` until every worker has finished.

    Keras Tuner's own ``start_server`` never stops its gRPC server, waits in 20-second steps and
    admits any caller; this one polls quickly, releases the port (so the chief can serve the next
    member's search) and demands the run's token when there is one.
    """
    from keras_tuner.src.distribute.oracle_chief import exit_chief

    from benchmark.train import distributed

    address = _oracle_address()
    token = distributed.chief_token()
    server, servicer = start_oracle_server(oracle, address, token)
    log.info(
        "chief: serving the oracle of %s on %s (%s)",
        oracle._project_dir,
        address,
        "workers must present the token" if token else "loopback, no token",
    )
    try:
        while not (servicer.stop_triggered and exit_chief(oracle)):
            time.sleep(poll_seconds)
    finally:
        server.stop(grace=2).wait()


def fixed_hyperparameters(values: dict[str, Any]) -> keras_tuner.HyperParameters:
    """A HyperParameters holding ``values`` as they are: how a member is built outside a search."""
    hp = keras_tuner.HyperParameters()
    for name, value in values.items():
        hp.values[name] = value
    return hp
