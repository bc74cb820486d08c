"""Refit on train + validation: the chosen configuration retrained on every labelled image.

AutoGluon's ``refit_full`` in zoobench's terms. Selection is over before this runs: the row to
refit is picked on validation (``best`` or any leaderboard row), and the refit model is never a
leaderboard row nor the exported best. Each from-scratch member of the row is retrained with its
recorded architecture, hyperparameters, augmentation, preprocessing and seed, for the number of
epochs that validation chose (the best epoch when early stopping restored one), on train +
validation; an ensemble keeps its weights or stacker. Pretrained members are kept as trained:
their head search and unfreezing schedule choose by validation, which a refit no longer has; so
are boosting rounds, whose SAMME weights belong to the training split they were computed on.
The result (models, test probabilities, ``refit.json``) lives in ``<run>/refit/<name>/`` and is
reported next to the original's test accuracy; ``load_predictor(run, "refit:<name>")`` predicts
with it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from benchmark.errors import ZoobenchError
from benchmark.formatting import utc_now
from benchmark.metrics import accuracy
from benchmark.naming import slug
from benchmark.store.records import RunRecord
from benchmark.store.runstore import Entry, RunStore

log = logging.getLogger(__name__)


def refit_name(model: str) -> str:
    """The folder a refit of ``model`` (best, a member ID or an ensemble name) is kept in."""
    return slug(model, "best")


def epochs_chosen(entry: Entry) -> int:
    """The epochs validation chose: the best epoch when early stopping restored it, else all."""
    training = entry.config.get("training") or {}
    trained = int(entry.metrics.get("epochs") or training.get("epochs") or 1)
    history = entry.history()
    if training.get("early_stopping_patience") and "val_accuracy" in history and len(history):
        return int(np.nanargmax(history["val_accuracy"].to_numpy())) + 1
    return max(1, trained)


def kept_reason(config: dict[str, Any]) -> str:
    """Why a member is kept as trained rather than refit ("" when it is refit)."""
    if config.get("strategy"):
        return f"pretrained ({config['strategy']}): selects by validation; kept as trained"
    if config.get("boosting"):  # its sample weights belong to the training split it had
        return "a boosting round: its SAMME weights are the training split's; kept as trained"
    return ""


def load_run_data(store: RunStore, data_dir: str | os.PathLike | None = None):
    """The run's dataset, reloaded as the run loaded it, checked against the stored labels."""
    from benchmark.data.datasets import load_for_profile

    run = store.run_record() or RunRecord()
    recorded = run.data or {}
    data_cfg = (run.profile or {}).get("data") or {}
    where = data_dir or data_cfg.get("data_dir") or recorded.get("location")
    data = load_for_profile(data_cfg, where, int(run.seed or 0))
    if recorded.get("fingerprint") and data.fingerprint != recorded["fingerprint"]:
        raise ZoobenchError(
            f"the data at {where} is not what run {store.root} trained on (its fingerprint "
            "differs); pass the run's data with --data-dir"
        )
    for split, labels in (("val", data.y_val), ("test", data.y_test)):
        stored = store.labels(split)
        if stored is not None and not np.array_equal(stored, labels):
            raise ZoobenchError(
                f"the {split} split reloaded from {where} differs from run {store.root}'s"
            )
    return data


def refit_full(
    run_dir: str | os.PathLike,
    model: str = "best",
    *,
    data_dir: str | os.PathLike | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Retrain ``model``'s members on train + validation; returns (and stores) ``refit.json``.

    Holds the run's lock (``benchmark.store.runfolder``): a run writing the folder and a refit never mix.
    """
    from benchmark.store import runfolder
    from ensembles.predictor import resolve_entry

    store = RunStore(run_dir)
    resolve_entry(store, model)  # an unknown run or model: one line, before the lock or the data
    with runfolder.locked(store.root):
        return _refit(store, model, data_dir, progress or (lambda line: log.info("%s", line)))


def _refit(store: RunStore, model: str, data_dir, say: Callable[[str], None]) -> dict[str, Any]:
    from benchmark.config.profiles import MemberSpec
    from benchmark.plan import budget
    from benchmark.plan.tasks import Task
    from benchmark.run.members import MemberTrainer
    from benchmark.store.inference import probabilities
    from benchmark.tune.tuning import fixed_hyperparameters
    from ensembles.export import ensemble_members
    from ensembles.predictor import combiner, resolve_entry

    entry = resolve_entry(store, model)
    members = ensemble_members(store, entry)
    if all(kept_reason(m.config) for m in members):
        raise ZoobenchError(
            f"refit: nothing to retrain in {entry.name!r}: {kept_reason(members[0].config)} "
            "(only from-scratch members are refit)"
        )
    data = load_run_data(store, data_dir)
    full = dataclasses.replace(
        data,
        x_train=np.concatenate([data.x_train, data.x_val]),
        y_train=np.concatenate([data.y_train, data.y_val]),
    )
    seed = int((store.run_record() or RunRecord()).seed or 0)
    trainer = MemberTrainer(store, full, seed=seed, clock=budget.Clock(None), progress=say)
    name = refit_name(model)
    store.refit_dir(name).mkdir(parents=True, exist_ok=True)
    say(
        f"refit {entry.name} on train + validation ({len(full.y_train)} images) into "
        f"{store.refit_dir(name)}"
    )
    rows, outs = [], []
    for m in members:
        cfg = m.config
        reason = kept_reason(cfg)
        if reason:
            say(f"    kept   {m.name} [{m.id}]: {reason}")
            rows.append({"id": m.id, "name": m.name, "refit": False, "reason": reason})
            outs.append(m.probs("test", calibrated=False))  # combined as the refit ones are
            continue
        spec = MemberSpec(
            name=m.name,
            architecture=cfg["architecture"],
            hp=dict(cfg.get("hp") or {}),
            training=dict(cfg["training"]),
            preprocess=list(cfg.get("preprocess") or []),
            augment=list(cfg.get("augment") or []),
            input_size=cfg.get("input_size"),
        )
        task = Task(
            spec,
            m.name,
            int(cfg.get("seed", seed)),
            bootstrap=cfg.get("bootstrap"),
            training=dict(cfg["training"]),
        )
        epochs = epochs_chosen(m)
        training = {**cfg["training"], "early_stopping_patience": 0}  # no validation left
        start = time.perf_counter()
        result = trainer.train(
            task,
            fixed_hyperparameters(spec.hp),
            training,
            spec.augment,
            seed=task.seed,
            epochs=epochs,
        )
        if not result.ok:
            raise ZoobenchError(f"refit of {m.name} [{m.id}] failed: {result.failed_reason}")
        store.save_refit_model(name, m.id, result.model)
        x_test = trainer.prepare(spec.preprocess, spec.outside_size)[2]
        probs = probabilities(result.model, x_test)
        seconds = time.perf_counter() - start
        say(f"    refit  {m.name} [{m.id}]: {epochs} epochs in {seconds:.0f}s")
        rows.append(
            {
                "id": m.id,
                "name": m.name,
                "refit": True,
                "epochs": epochs,
                "train_seconds": round(seconds, 2),
            }
        )
        outs.append(probs)
    combine = combiner(entry, int(outs[0].shape[1]))
    test_probs = outs[0] if combine is None else combine(outs)
    y_test = data.y_test
    record = {
        "of": {"model": model, "key": entry.key, "name": entry.name, "kind": entry.kind},
        "members": rows,
        "train_images": int(len(full.y_train)),
        "seed": seed,
        "data": data.source,
        "test_accuracy": accuracy(test_probs, y_test),
        "original_test_accuracy": accuracy(entry.probs("test"), y_test),
        "finished_at": utc_now(),
    }
    store.write_refit(name, record, test_probs)
    say(
        f"refit {entry.name}: test accuracy {record['original_test_accuracy']:.4f} -> "
        f"{record['test_accuracy']:.4f} ({data.source}; selection unchanged)"
    )
    return record
