"""A member's hyperparameter search: Keras Tuner drives the trials, the best k become members.

The search's project lives in the run's ``tuner/`` folder, so an interrupted search resumes at
its next trial. Trials train through the same ``MemberTrainer.train`` as every member.
"""

from __future__ import annotations

import logging
import time

from benchmark import atomic
from benchmark.errors import ZoobenchError
from benchmark.modelfile import load_model
from benchmark.naming import slug
from benchmark.plan.tasks import Task
from benchmark.run.members import MemberTrainer
from benchmark.store.runstore import member_id

log = logging.getLogger(__name__)


def run_search(members: MemberTrainer, task: Task, role: str | None, run_seed: int) -> None:
    """Search ``task``'s space (a worker only runs trials); store the best trials as members."""
    import keras_tuner

    from benchmark.tune import tuning

    spec, data, settings = task.spec, members.data, task.tune
    key_def = members.definition(task, spec.hp, task.training, spec.augment)
    key_def["tune"] = {k: v for k, v in settings.items() if k not in ("restore", "top_k")}
    project = f"{slug(spec.name.lower(), 'member', 40)}-{member_id(key_def)}"
    fixed = keras_tuner.HyperParameters()
    for name, value in spec.hp.items():
        fixed.Fixed(name, value)

    def declare(hp):
        import zoo

        tuning.declare_training_hps(hp, settings["search"], task.training, spec.augment)
        if spec.strategy is None:
            return zoo.get(spec.architecture).build(
                hp, input_shape=data.input_shape, num_classes=data.num_classes
            )
        return None  # pretrained: only the training hps are declared up front

    def train_fn(hp, epochs, seed):
        training, augment = tuning.declare_training_hps(
            hp, settings["search"], task.training, spec.augment
        )
        return members.train(task, hp, training, augment, seed=seed, epochs=epochs)

    start = time.perf_counter()
    try:
        tuner = tuning.ZooTuner(
            tuning.make_oracle(settings, fixed, seed=run_seed),
            tuning.SpaceModel(declare),
            train_fn,
            directory=members.store.tuner_dir,
            project_name=project,
            epochs=settings["epochs"],
            seed=run_seed,
            deadline=members.clock.deadline,
        )
        tuner.search(verbose=members.verbose)
    except Exception as exc:  # noqa: BLE001 - weights unavailable, every trial NaN, ...
        if role == "worker" or isinstance(exc, ZoobenchError):
            raise
        mid = member_id(key_def)
        config = members.config(mid, task.label, task, spec.hp, task.training, spec.augment)
        members.store_failure(
            members.store.member_dir(mid), config, exc, time.perf_counter() - start
        )
        return
    if role == "worker":
        return
    trials = tuner.best_trials(settings["top_k"])
    if not trials:
        members.progress(f"    no completed trial for {task.label}")
        return
    for rank, trial in enumerate(trials):
        _member_from_trial(members, task, tuner, trial, rank, len(trials))
    removed = tuner.prune({t.trial_id for t in trials})
    if removed:
        log.info("pruned %d trial models of %s", removed, project)


def _member_from_trial(members: MemberTrainer, task: Task, tuner, trial, rank: int, k: int) -> None:
    """One of the best trials as a member: its model restored, or retrained at full length."""
    import keras
    import pandas as pd

    from benchmark.train.training import FitResult
    from benchmark.tune import tuning

    spec, settings = task.spec, task.tune
    arch_hp, train_hp = tuning.split_values(trial.hyperparameters.values)
    augment = spec.augment
    if "augment" in train_hp:
        augment = list(settings["search"]["augment"][train_hp.pop("augment")])
    training = {**task.training, **train_hp}
    # Past the deadline a best trial is restored, never retrained: the budget is not overrun.
    restore = settings["restore"] or members.clock.expired
    if restore:
        training["epochs"] = int(
            trial.hyperparameters.values.get("tuner/epochs", settings["epochs"])
        )
    name = task.label if k == 1 else f"{task.label} [top {rank + 1}]"
    mid = member_id(
        {**members.definition(task, arch_hp, training, augment), "trial": trial.trial_id}
    )
    config = members.config(
        mid,
        name,
        task,
        arch_hp,
        training,
        augment,
        extra={
            "tuner": {
                "project": tuner.project_name,
                "trial": trial.trial_id,
                "algorithm": settings["algorithm"],
                "score": trial.score,
            }
        },
    )

    def restore_trial():
        trial_dir = tuner.trial_dir(trial.trial_id)
        keras.backend.clear_session()
        model = load_model(
            trial_dir / tuning.TRIAL_MODEL, f"trial {trial.trial_id} of {tuner.project_name}"
        )
        history = pd.read_csv(trial_dir / tuning.TRIAL_HISTORY)
        costs = atomic.read_json(trial_dir / tuning.TRIAL_COSTS)
        return FitResult(
            model=model,
            history=history,
            epochs=len(history),
            train_seconds=costs["train_seconds"],
            images_per_second=costs["images_per_second"],
        )

    def retrain():
        hp = tuning.fixed_hyperparameters(arch_hp)
        return members.train(task, hp, training, augment, seed=task.seed, member_key=mid)

    members.keep_or_train(mid, config, training, restore_trial if restore else retrain)
