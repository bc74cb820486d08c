"""Members: what defines one (its ID), its stored config, training it and storing the result.

A member's folder is named by a hash of what defines it (data, split, seed, architecture, hp,
training, preprocessing, augmentation, strategy), so a rerun keeps what it already has and trains
only what is missing. A member that raises is stored as failed (or skipped, for unavailable
weights) with its reason; a ZoobenchError (the user's input is wrong) ends the run.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.config.profiles import MemberSpec, resizes_inside
from benchmark.config.schema import training_identity
from benchmark.data.images import resize_to
from benchmark.errors import ZoobenchError, short_error
from benchmark.formatting import duration
from benchmark.naming import slug
from benchmark.plan.tasks import Task
from benchmark.store.inference import probabilities, timed_probabilities
from benchmark.store.records import MemberConfig, Metrics, Status
from benchmark.store.runstore import RunStore, member_id
from benchmark.train.transfer import feature_cache_dir
from benchmark.tune.hpspace import check_member_hp

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


@dataclass
class MemberOutcome:
    """What happened to one member of this run, as shown in the progress log and the summary."""

    id: str
    name: str
    status: str
    val_accuracy: float | None
    seconds: float
    kept: bool = False
    reason: str = ""


class MemberTrainer:
    """Trains a run's members into its store, one at a time, keeping those it already has."""

    def __init__(
        self,
        store: RunStore,
        data,
        *,
        seed: int,
        clock,
        progress: Progress,
        strategy=None,
        tensorboard: bool = False,
        verbose: int = 0,
    ):
        self.store = store
        self.data = data
        self.seed = seed  # the run's seed: bootstrap resamples are drawn from it
        self.clock = clock
        self.progress = progress
        self.strategy = strategy
        self.tensorboard = tensorboard
        self.verbose = verbose
        self.outcomes: list[MemberOutcome] = []
        self._prepared: dict[str, tuple] = {}
        # boosting groups: the finished rounds so far, and why the next round cannot run
        self._rounds: dict[str, list] = {}
        self._blocked: dict[str, str] = {}

    # ---- what defines a member ------------------------------------------------------------------
    def definition(self, task: Task, hp: dict, training: dict, augment: list) -> dict[str, Any]:
        """Everything that changes what a member learns: hashed into its ID."""
        spec, d = task.spec, self.data
        return {
            "data": d.fingerprint,
            "split": {**d.split, "seed": d.seed},
            "seed": task.seed,
            "architecture": spec.architecture,
            "hp": hp,
            "training": training_identity(training),
            "strategy": spec.strategy,
            "input_size": spec.input_size,
            "preprocess": spec.preprocess,
            "augment": augment,
            "bootstrap": task.bootstrap,
            **({"transfer": spec.transfer} if spec.transfer else {}),
        }

    def config(
        self,
        mid: str,
        name: str,
        task: Task,
        hp: dict,
        training: dict,
        augment: list,
        extra: dict | None = None,
    ) -> MemberConfig:
        """The member's config.json (docs/CONTRACTS.md)."""
        import zoo

        entry = zoo.get(task.spec.architecture)
        d = self.data
        return MemberConfig(
            id=mid,
            name=name,
            architecture=task.spec.architecture,
            kind=entry.kind,
            family=entry.family,
            strategy=task.spec.strategy,
            input_size=task.spec.input_size
            or (entry.input_size if resizes_inside(task.spec.strategy) else d.input_shape[0]),
            hp=hp,
            training=training,
            preprocess=task.spec.preprocess,
            augment=augment,
            seed=task.seed,
            bootstrap=task.bootstrap,
            group=task.group,
            class_names=list(d.class_names),
            extra=extra or {},
        )

    # ---- one member -----------------------------------------------------------------------------
    def run(self, task: Task) -> None:
        """Train ``task``'s one member unless the store has it."""
        from benchmark.tune.tuning import fixed_hyperparameters

        if task.boost is not None:
            self._run_round(task)
            return
        hp, training, augment = dict(task.spec.hp), dict(task.training), list(task.spec.augment)
        mid = member_id(self.definition(task, hp, training, augment))
        config = self.config(mid, task.label, task, hp, training, augment)
        self.keep_or_train(
            mid,
            config,
            training,
            lambda: self.train(
                task, fixed_hyperparameters(hp), training, augment, seed=task.seed, member_key=mid
            ),
        )

    def _run_round(self, task: Task) -> None:
        """One boosting round (``benchmark.train.boosting``): weights from the group's finished rounds'
        stored training predictions, so a resumed run trains (or keeps) exactly the same round."""
        from benchmark.train import boosting
        from benchmark.tune.tuning import fixed_hyperparameters

        d, k, group = self.data, task.boost.round, str(task.group)
        rounds = self._rounds.setdefault(group, [])
        blocked = self._blocked.get(group, "")
        if not blocked and len(rounds) != k:
            blocked = f"round {len(rounds)} did not run (dropped by the budget or not reached)"
        state = None
        if not blocked:
            predicted = [e.probs("train").argmax(axis=1) for e in rounds]
            state = boosting.replay(predicted, d.y_train, d.num_classes)
            blocked = state.stopped
        if blocked or state is None:
            self._blocked[group] = blocked  # the later rounds are skipped for the same reason
            self._record(
                MemberOutcome(
                    "-", task.label, "skipped", None, 0.0, reason=f"not trained: {blocked}"
                )
            )
            return
        hp, training, augment = dict(task.spec.hp), dict(task.training), list(task.spec.augment)
        info = {
            "round": k,
            "rounds": task.boost.rounds,
            "weighting": boosting.weighting(task.spec.strategy, augment),
            "weights_sha256": boosting.weights_hash(state.weights),
            "previous": [boosting.link(e) for e in rounds],
        }
        mid = member_id({**self.definition(task, hp, training, augment), "boosting": info})
        config = self.config(mid, task.label, task, hp, training, augment, extra={"boosting": info})

        def train():
            result = self.train(
                task,
                fixed_hyperparameters(hp),
                training,
                augment,
                seed=task.seed,
                member_key=mid,
                boost_weights=state.weights,
            )
            if result.ok:  # SAMME's error and alpha, on the training split (never val or test)
                x_train = self.prepare(task.spec.preprocess, task.spec.outside_size)[0]
                result.train_probs = probabilities(result.model, x_train)
                wrong = result.train_probs.argmax(axis=1) != d.y_train
                _, alpha, error = boosting.samme_update(state.weights, wrong, d.num_classes)
                stop = boosting.stop_reason(error, d.num_classes, k)
                result.extra["boosting"] = {"alpha": alpha, "error": error, "stop": stop}
            return result

        self.keep_or_train(mid, config, training, train)
        done = self.store.is_complete(self.store.member_dir(mid))
        entry = self.store.member(mid) if done else None
        if entry is None or not entry.ok:
            self._blocked[group] = f"round {k} {entry.status if entry else 'did not finish'}"
        else:
            rounds.append(entry)

    def keep_or_train(self, mid: str, config: MemberConfig, training: dict, train) -> None:
        """Keep a member the store already has; else ``train()`` it and store the result."""
        folder = self.store.member_dir(mid)
        if self.store.is_complete(folder):
            try:
                entry = self.store.member(mid)
                problems = entry.verify()
            except ZoobenchError as exc:  # a torn config.json or metrics.json
                entry, problems = None, [str(exc)]
            if not problems:
                self._record(
                    MemberOutcome(
                        mid,
                        str(config.name),
                        entry.status,
                        entry.record.val_accuracy,
                        0.0,
                        kept=True,
                        reason=entry.record.reason,
                    )
                )
                return
            self.progress(
                f"    damaged {config.name} [{mid}]: {'; '.join(problems)}; retraining it"
            )
            shutil.rmtree(folder)
        # An earlier try's leftovers (a Ray job run again after its worker died): never hashed in.
        self.store.discard_incomplete(folder)
        start = time.perf_counter()
        try:
            result = train()
        except ZoobenchError:
            raise
        except Exception as exc:  # noqa: BLE001 - one broken member must not end the run
            self.store_failure(folder, config, exc, time.perf_counter() - start)
            return
        self._store_result(folder, config, result, training)

    def train(
        self,
        task: Task,
        hp,
        training: dict,
        augment: list,
        *,
        seed: int,
        epochs: int | None = None,
        member_key: str | None = None,
        boost_weights: np.ndarray | None = None,
    ):
        """Build and train ``task``'s model with ``hp`` (a HyperParameters); a FitResult.

        ``boost_weights`` (a boosting round's, one a training image) become Keras ``sample_weight``
        or a weighted resample of the training split (``benchmark.train.boosting.weighting``)."""
        import keras

        import zoo
        from benchmark.train import distributed
        from benchmark.train import training as training_mod
        from benchmark.train import transfer as transfer_mod
        from zoo import backend

        spec, d = task.spec, self.data
        keras.backend.clear_session()
        backend.set_random_seed(seed)
        x_train, x_val, x_test = self.prepare(spec.preprocess, spec.outside_size)
        y_train = d.y_train
        if task.bootstrap is not None:
            rng = np.random.default_rng(task.bootstrap["seed"] + 1000 * self.seed)
            idx = rng.integers(0, len(y_train), size=len(y_train))
            x_train, y_train = x_train[idx], y_train[idx]
        sample_weight = None
        if boost_weights is not None:
            from benchmark.train import boosting

            if boosting.weighting(spec.strategy, augment) == boosting.RESAMPLING:
                round_index = task.boost.round if task.boost else 0
                idx = boosting.resample(boost_weights, [self.seed, round_index])
                x_train, y_train = x_train[idx], y_train[idx]
            else:
                sample_weight = boosting.as_sample_weight(boost_weights)
        epochs = int(epochs or training["epochs"])
        tb = (
            str(self.store.root / "tensorboard" / member_key)
            if self.tensorboard and member_key
            else None
        )
        if spec.strategy is not None:
            if spec.input_size and "input_size" not in hp.values:
                hp.values["input_size"] = (
                    spec.input_size
                )  # the backbone reads its input side from hp
            data = dataclasses.replace(
                d, x_train=x_train, y_train=y_train, x_val=x_val, x_test=x_test
            )
            return transfer_mod.fit_pretrained(
                spec.strategy,
                spec.architecture,
                hp,
                data,
                training,
                seed=seed,
                epochs=epochs,
                deadline=self.clock.deadline,
                tensorboard_dir=tb,
                cache_dir=str(feature_cache_dir()),
                tuner=self._head_search(spec, member_key),
                options=spec.transfer_options,
                verbose=_bar(self.verbose),
                augment=augment,
            )
        entry = zoo.get(spec.architecture)
        with (
            distributed.scope(self.strategy),
            training_mod.precision_scope(training["precision"]) as policy,
        ):
            model = entry.build(hp, input_shape=x_train.shape[1:], num_classes=d.num_classes)
            check_member_hp(spec, hp)  # the plan checked it too: one function, on this build
            result = training_mod.fit(
                model,
                x_train,
                y_train,
                x_val,
                d.y_val,
                training,
                num_classes=d.num_classes,
                augment=augment,
                seed=seed,
                epochs=epochs,
                deadline=self.clock.deadline,
                jit_compile=bool(entry.extra.get("jit_compile", False)),
                tensorboard_dir=tb,
                verbose=self.verbose,
                sample_weight=sample_weight,
            )
        result.extra["dtype_policy"] = policy
        return result

    def _head_search(self, spec: MemberSpec, key: str | None) -> dict[str, Any]:
        """Feature extraction's head search: its trials, in the run's tuner folder (resumable)."""
        head: dict[str, Any] = {"max_trials": int(spec.transfer_options["head_trials"])}
        if key:
            head.update(
                directory=str(self.store.tuner_dir),
                project_name=f"head-{slug(spec.name.lower(), 'member', 40)}-{key}",
            )
        return head

    def prepare(self, preprocess: list[dict], size: int | None) -> tuple[np.ndarray, ...]:
        """(x_train, x_val, x_test) after the preprocessing steps and resizing; cached per recipe."""
        if size == self.data.x_train.shape[1]:
            size = None
        key = json.dumps([preprocess, size], sort_keys=True)
        if key not in self._prepared:
            d = self.data
            arrays = [d.x_train, d.x_val, d.x_test]
            if preprocess:
                from benchmark.data.preprocess import apply_steps

                arrays = [apply_steps(a, preprocess) for a in arrays]
            arrays = [resize_to(a, size) for a in arrays]
            self._prepared = {key: tuple(arrays)}  # keep one recipe: memory stays bounded
        return self._prepared[key]

    # ---- storing --------------------------------------------------------------------------------
    def store_failure(
        self, folder: Path, config: MemberConfig, exc: BaseException, seconds: float
    ) -> None:
        status = Status.SKIPPED if _is_weights_unavailable(exc) else Status.FAILED
        reason = short_error(exc)
        if status is Status.FAILED:  # one line; the traceback goes to the member's error.txt
            where = self.store.write_error(folder, exc)
            log.warning(
                "member %s failed: %s%s",
                config.name,
                reason,
                f" (traceback in {where})" if where else "",
            )
            log.debug("member %s failed", config.name, exc_info=exc)
        metrics = Metrics(status, reason, train_seconds=round(seconds, 2))
        self.store.write_entry(folder, config=config, metrics=metrics)
        self._record(
            MemberOutcome(config.id, str(config.name), status, None, seconds, reason=reason)
        )

    def _store_result(self, folder: Path, config: MemberConfig, result, training: dict) -> None:
        from benchmark.train.training import evaluate_probs

        if not result.ok:
            metrics = Metrics(
                Status.FAILED,
                result.failed_reason,
                epochs=result.epochs,
                train_seconds=round(result.train_seconds, 2),
            )
            self.store.write_entry(folder, config=config, metrics=metrics, history=result.history)
            self._record(
                MemberOutcome(
                    config.id,
                    str(config.name),
                    Status.FAILED,
                    None,
                    result.train_seconds,
                    reason=result.failed_reason,
                )
            )
            return
        _, x_val, x_test = self.prepare(config.preprocess, config.outside_size)
        if result.val_probs is not None and result.test_probs is not None:
            val_probs, test_probs = result.val_probs, result.test_probs
            _, ips = timed_probabilities(result.model, x_val[:512])  # the speed, from a sample
        else:
            val_probs, ips = timed_probabilities(result.model, x_val)
            test_probs = probabilities(result.model, x_test)
        val = evaluate_probs(val_probs, self.data.y_val)
        reason = ""
        if result.stopped_by_budget:
            reason = f"stopped by the budget after {result.epochs} of {training['epochs']} epochs"
        metrics = Metrics(
            Status.DONE,
            reason,
            val_accuracy=val["accuracy"],
            val_loss=val["loss"],
            params=int(result.model.count_params()),
            flops=_flops(result.model),
            train_seconds=round(result.train_seconds, 2),
            epochs=int(result.epochs),
            train_images_per_second=round(result.images_per_second, 1),
            inference_images_per_second=round(ips, 1),
            extra=dict(result.extra),
        )
        if result.train_probs is not None:  # a boosting round's: the next round's weights
            self.store.write_train_probs(folder, result.train_probs)
        self.store.write_entry(
            folder,
            config=config,
            metrics=metrics,
            val_probs=val_probs,
            test_probs=test_probs,
            history=result.history,
            model=result.model,
        )
        self._record(
            MemberOutcome(
                config.id,
                str(config.name),
                Status.DONE,
                val["accuracy"],
                result.train_seconds,
                reason=reason,
            )
        )

    def _record(self, outcome: MemberOutcome) -> None:
        self.outcomes.append(outcome)
        if outcome.kept:
            head = "kept   "
        else:
            head = {"done": "done   ", "failed": "FAILED ", "skipped": "skipped"}.get(
                outcome.status, outcome.status
            )
        acc = f"val_accuracy {outcome.val_accuracy:.4f}" if outcome.val_accuracy is not None else ""
        took = "" if outcome.kept else f" in {duration(outcome.seconds)}"
        why = f" ({outcome.reason})" if outcome.reason else ""
        self.progress(f"    {head} {outcome.name} [{outcome.id}] {acc}{took}{why}")


def _bar(verbose: int) -> int:
    """Keras's verbosity for a long silent step (feature extraction): a live progress bar on a
    terminal, one summary line in a log file, nothing when the run is quiet."""
    import sys

    if not verbose:
        return 0
    return 1 if sys.stdout.isatty() else 2


def _flops(model) -> int | None:
    from zoo.flops import count_flops

    try:
        return int(count_flops(model))
    except Exception as exc:  # noqa: BLE001 - a cost figure is never worth a failed member
        log.warning("could not count FLOPs of %s: %s", model.name, exc)
        return None


def _is_weights_unavailable(exc: BaseException) -> bool:
    return any(cls.__name__ == "WeightsUnavailable" for cls in type(exc).__mro__)
