"""The benchmark runner: train and tune a profile's members into the run store, then ensemble and report.

    Runner(load_profile("smoke"), "runs/smoke").run()

A run is resumable: each member's folder is named by a hash of what defines it, and is complete
once its ``metrics.json`` exists. A rerun keeps complete members (and finished tuner trials),
discards incomplete folders and trains what is missing, so an interrupted run ends with the same
leaderboard as an unbroken one (with the same seed, and op determinism where the profile asks).
Test probabilities are stored for the report; nothing here selects with test labels.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmark import atomic
from benchmark import budget as budget_mod
from benchmark.errors import ZoobenchError
from benchmark.profiles import MemberSpec, Profile
from benchmark.store import RunStore, member_id, save_model
from zoo import backend

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Task:
    """One line of the plan: a member to train (or a search whose best trials become members)."""

    spec: MemberSpec
    label: str
    seed: int
    bootstrap: dict | None = None
    group: str | None = None
    training: dict[str, Any] = field(default_factory=dict)
    tune: dict[str, Any] | None = None
    decision: budget_mod.Decision | None = None
    note: str = ""  # e.g. "weights unavailable"

    @property
    def tuned(self) -> bool:
        return self.tune is not None


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
        self._prepared: dict[str, tuple] = {}
        self.clock = budget_mod.Clock(self.budget_seconds)
        self.outcomes: list[MemberOutcome] = []
        self.tasks: list[Task] = []
        self._strategy = None

    # ---- data ---------------------------------------------------------------------------------------
    @property
    def data(self):
        if self._data is None:
            from benchmark.datasets import load

            d = self.profile.data
            self._data = load(
                d.get("dataset", "cifar10"),
                data_dir=self.data_dir,
                val_fraction=d.get("val_fraction", 0.1),
                seed=self.seed,
                train_size=d.get("train_size"),
                val_size=d.get("val_size"),
                test_size=d.get("test_size"),
            )
        return self._data

    def _prepare(self, preprocess: list[dict], size: int | None) -> tuple[np.ndarray, ...]:
        """(x_train, x_val, x_test) after the preprocessing steps and resizing; cached per recipe."""
        if size == self.data.x_train.shape[1]:
            size = None
        key = json.dumps([preprocess, size], sort_keys=True)
        if key not in self._prepared:
            d = self.data
            arrays = [d.x_train, d.x_val, d.x_test]
            if preprocess:
                from benchmark.preprocess import apply_steps

                arrays = [apply_steps(a, preprocess) for a in arrays]
            if size and size != d.x_train.shape[1]:
                arrays = [_resize(a, size) for a in arrays]
            self._prepared = {key: tuple(arrays)}  # keep one recipe: memory stays bounded
        return self._prepared[key]

    # ---- the plan -----------------------------------------------------------------------------------
    def expand(self) -> list[Task]:
        """The profile's members as tasks: one per seed / bootstrap resample / search."""
        tasks = []
        for spec in self.profile.members:
            training = dict(spec.training)
            if spec.tune is not None:
                tasks.append(
                    Task(spec, spec.name, self.seed, training=training, tune=dict(spec.tune))
                )
            elif spec.bagging:
                for k in range(spec.bagging):
                    tasks.append(
                        Task(
                            spec,
                            f"{spec.name} [bag {k}]",
                            self.seed,
                            bootstrap={"seed": k},
                            group=f"bagging:{spec.name}",
                            training=dict(training),
                        )  # fmt: skip
                    )
            elif spec.seeds > 1:
                for k in range(spec.seeds):
                    tasks.append(
                        Task(
                            spec,
                            f"{spec.name} [seed {self.seed + k}]",
                            self.seed + k,
                            group=f"seeds:{spec.name}",
                            training=dict(training),
                        )  # fmt: skip
                    )
            else:
                tasks.append(Task(spec, spec.name, self.seed, training=training))
        return tasks

    def estimate(self, task: Task) -> budget_mod.Estimate:
        """Seconds ``task`` should take here, from a timed probe of its model (calibrated once)."""
        import zoo

        spec, d = task.spec, self.data
        hp = dict(spec.hp)
        if spec.strategy is None:
            size = spec.input_size
        else:  # pretrained backbones take the data's pixels and resize to hp's input_size inside
            size = None
            if spec.input_size:
                hp["input_size"] = spec.input_size
        shape = (size, size, d.input_shape[2]) if size else d.input_shape
        batch = int(task.training["batch_size"])
        probe_spec = {"architecture": spec.architecture, "hp": hp, "shape": list(shape),
                      "batch": batch, "strategy": spec.strategy}  # fmt: skip

        def factory():
            return zoo.build(spec.architecture, _fixed_hp(hp), shape, d.num_classes)

        tp = budget_mod.probe(factory, shape, d.num_classes, min(batch, 64), probe_spec)
        n_train, n_val, n_test = len(d.y_train), len(d.y_val), len(d.y_test)
        predict = (n_val + n_test) / tp.infer
        fixed = budget_mod.STARTUP_SECONDS + tp.build_seconds + predict
        if spec.strategy == "feature-extraction":  # one pass over everything, then head trials
            epoch = 0.05 * n_train / tp.infer
            head_trials = int(spec.transfer.get("head_trials", 6))
            views = 2 if spec.transfer.get("flip_features") else 1  # images and their mirrors
            fixed += (
                views * (n_train + n_val + n_test) / tp.infer
                + head_trials * budget_mod.STARTUP_SECONDS
            )  # fmt: skip
        else:
            epoch = n_train / tp.train + n_val / tp.infer
        epochs = int(task.training["epochs"])
        if task.tuned:
            from benchmark.tuning import trial_epochs

            schedule, most = trial_epochs(task.tune), int(task.tune["epochs"])
            return budget_mod.Estimate(
                epoch, fixed, epochs, trials=len(schedule), trial_epochs=most,
                trial_epoch_share=sum(schedule) / max(len(schedule) * most, 1),
                retrain=not task.tune["restore"],
            )  # fmt: skip
        return budget_mod.Estimate(epoch, fixed, epochs)

    def plan(self, estimate: bool = True) -> list[Task]:
        """Expand the profile and fit it to the budget; every task carries its decision."""
        tasks = self.expand()
        if estimate:
            estimates = []
            for task in tasks:
                try:
                    estimates.append(self.estimate(task))
                except Exception as exc:  # noqa: BLE001 - e.g. pretrained weights unavailable offline
                    task.note = _short(exc)
                    estimates.append(budget_mod.Estimate(0.0, 0.0, 0))
            remaining = None if self.budget_seconds is None else max(0.0, self.clock.remaining)
            for task, decision in zip(
                tasks, budget_mod.fit_to_budget(estimates, remaining), strict=True
            ):
                task.decision = decision
                _apply(task, decision)
        self.tasks = tasks
        return tasks

    def describe_plan(self, tasks: list[Task]) -> list[str]:
        lines = []
        total = 0.0
        for i, task in enumerate(tasks, 1):
            what = (
                "tune " + _tune_summary(task.tune)
                if task.tuned
                else f"{task.training['epochs']} epochs"
            )
            est = ""
            if task.decision is not None and not task.note:
                est = f"~{budget_mod.format_duration(task.decision.estimate.seconds)}"
                if task.decision.action != "dropped":
                    total += task.decision.estimate.seconds
            action = task.decision.action if task.decision else "run"
            note = task.note or (task.decision.note if task.decision else "")
            lines.append(f"{i:>3}. {task.label:<45} {what:<32} {est:>8}  {action}"
                         + (f" ({note})" if note else ""))  # fmt: skip
        if any(t.decision for t in tasks):
            budget = (f", budget {budget_mod.format_duration(self.budget_seconds)}"
                      if self.budget_seconds else "")  # fmt: skip
            lines.append(
                f"     estimated total ~{budget_mod.format_duration(total)} on this machine{budget}"
            )
        return lines

    # ---- the run ------------------------------------------------------------------------------------
    def run(self) -> RunStore:
        """Train everything the plan keeps, then ensembles and report; returns the store."""
        from benchmark import distributed

        role = distributed.role()
        self._start(role)
        self.progress(f"run {self.store.root} ({self.profile.name}, seed {self.seed}, "
                      f"data {self.data.source}: {len(self.data.y_train)}/{len(self.data.y_val)}/"
                      f"{len(self.data.y_test)})")  # fmt: skip
        tasks = self.plan(estimate=self.budget_seconds is not None)
        for line in self.describe_plan(tasks):
            self.progress(line)
        self._strategy = distributed.make_strategy(self.strategy_name)
        for i, task in enumerate(tasks, 1):
            if task.decision is not None and task.decision.action == "dropped":
                self.progress(f"dropped {task.label}: {task.decision.note}")
                continue
            if self.clock.expired:
                left = [t.label for t in tasks[i - 1 :]]
                self.progress(f"budget reached: not started: {', '.join(left)}")
                break
            self.progress(self._status_line(i, len(tasks), task))
            if task.tuned:
                # The k-th tuned member of the profile, dropped ones counted: a chief and a worker
                # whose budgets drop different members still meet on the same port per search.
                search_index = sum(1 for t in tasks[: i - 1] if t.tuned)
                with distributed.search_port(search_index):
                    self._run_search(task, role)
            elif role != "worker":
                self._run_member(task)
        if role == "worker":
            self.progress("worker: all searches finished")
            return self.store
        self._finish()
        return self.store

    def _status_line(self, i: int, n: int, task: Task) -> str:
        elapsed = budget_mod.format_duration(self.clock.elapsed)
        left = (f", {budget_mod.format_duration(max(0, self.clock.remaining))} of budget left"
                if self.budget_seconds else "")  # fmt: skip
        return f"[{i}/{n}] {elapsed} elapsed{left}: {'tuning' if task.tuned else 'training'} {task.label}"

    def _start(self, role: str | None) -> None:
        import keras

        if self.fresh and role != "worker" and self.store.root.exists():
            shutil.rmtree(self.store.root)
        previous = self.store.read_run()
        if previous and role != "worker":
            before = (previous.get("profile", {}).get("name"), previous.get("seed"))
            now = (self.profile.name, self.seed)
            if before != now:
                raise ZoobenchError(
                    f"{self.store.root} holds a run of profile {before[0]!r} seed {before[1]}; this is "
                    f"{now[0]!r} seed {now[1]}: use --fresh to start over or another --out"
                )
            fingerprint = previous.get("data", {}).get("fingerprint")
            if fingerprint and fingerprint != self.data.fingerprint:
                raise ZoobenchError(
                    f"{self.store.root} was run on other data ({fingerprint}); use --fresh"
                )
        self._check_ensemble_config()
        if self.profile.deterministic:
            backend.enable_determinism()
        keras.utils.set_random_seed(self.seed)
        if role == "worker":
            return
        for folder in list(self.store.iter_incomplete()):
            log.info("discarding the incomplete %s", folder)
            self.store.discard_incomplete(folder)
        self._started_at = _now()
        self._write_run_json(finished=False)
        self._write_data()

    def _write_run_json(self, finished: bool) -> None:
        meta = {
            "name": self.store.root.name,
            "profile": self.profile.to_json(),
            "seed": self.seed,
            "data": self.data.summary(),
            "backend": backend.name(),
            "versions": backend.versions(),
            "machine": backend.describe(),
            "budget_seconds": self.budget_seconds,
            "started_at": self._started_at,
            "finished_at": _now() if finished else None,
            "wall_seconds": round(self.clock.elapsed, 2) if finished else None,
            "deterministic": self.profile.deterministic,
            "strategy": self.strategy_name,
        }
        self.store.write_run(meta)

    def _write_data(self) -> None:
        d = self.data
        arrays = {"y_val": d.y_val, "y_test": d.y_test, "x_test": d.x_test}
        rng = np.random.default_rng(self.seed)
        pick = np.sort(rng.choice(len(d.y_train), size=min(25, len(d.y_train)), replace=False))
        arrays.update(sample_x=d.x_train[pick], sample_y=d.y_train[pick])
        for name, array in arrays.items():
            if not (self.store.data_dir / f"{name}.npy").is_file():
                self.store.save_array(name, array)

    # ---- one member ---------------------------------------------------------------------------------
    def _definition(self, task: Task, hp: dict, training: dict, augment: list) -> dict[str, Any]:
        spec, d = task.spec, self.data
        return {
            "data": d.fingerprint,
            "split": {**d.split, "seed": d.seed},
            "seed": task.seed,
            "architecture": spec.architecture,
            "hp": hp,
            "training": training,
            "strategy": spec.strategy,
            "input_size": spec.input_size,
            "preprocess": spec.preprocess,
            "augment": augment,
            "bootstrap": task.bootstrap,
            **({"transfer": spec.transfer} if spec.transfer else {}),
        }

    def _config(self, mid: str, name: str, task: Task, hp: dict, training: dict, augment: list,
                extra: dict | None = None) -> dict[str, Any]:  # fmt: skip
        import zoo

        entry = zoo.get(task.spec.architecture)
        d = self.data
        return {
            "id": mid,
            "name": name,
            "architecture": task.spec.architecture,
            "kind": entry.kind,
            "family": entry.family,
            "strategy": task.spec.strategy,
            "input_size": task.spec.input_size
            or (entry.input_size if task.spec.strategy else d.input_shape[0]),
            "hp": hp,
            "training": training,
            "preprocess": task.spec.preprocess,
            "augment": augment,
            "seed": task.seed,
            "bootstrap": task.bootstrap,
            "group": task.group,
            "class_names": list(d.class_names),
            **(extra or {}),
        }

    def _run_member(self, task: Task) -> None:
        hp, training, augment = dict(task.spec.hp), dict(task.training), list(task.spec.augment)
        mid = member_id(self._definition(task, hp, training, augment))
        config = self._config(mid, task.label, task, hp, training, augment)
        self._keep_or_train(
            mid, config, training,
            lambda: self.train(task, _fixed_hp(hp), training, augment, seed=task.seed, member_key=mid),
        )  # fmt: skip

    def _keep_or_train(self, mid: str, config: dict, training: dict, train) -> None:
        """Keep a member the store already has; else ``train()`` it and store the result.

        A member that raises is stored as failed with its reason and the run goes on; a
        ZoobenchError (the user's input is wrong) ends the run.
        """
        folder = self.store.member_dir(mid)
        if self.store.is_complete(folder):
            entry = self.store.member(mid)
            self._record(MemberOutcome(mid, config["name"], entry.status, entry.metrics.get("val_accuracy"),
                                       0.0, kept=True, reason=entry.metrics.get("reason", "")))  # fmt: skip
            return
        start = time.perf_counter()
        try:
            result = train()
        except ZoobenchError:
            raise
        except Exception as exc:  # noqa: BLE001 - one broken member must not end the run
            self._store_failure(folder, config, exc, time.perf_counter() - start)
            return
        self._store_result(folder, config, result, training)

    def _store_failure(
        self, folder: Path, config: dict, exc: BaseException, seconds: float
    ) -> None:
        status = "skipped" if _is_weights_unavailable(exc) else "failed"
        if status == "failed":
            log.warning("member %s failed", config["name"], exc_info=exc)
        reason = _short(exc)
        metrics = {
            "status": status,
            "reason": reason,
            "train_seconds": round(seconds, 2),
            "finished_at": _now(),
        }
        self.store.write_entry(folder, config=config, metrics=metrics)
        self._record(
            MemberOutcome(config["id"], config["name"], status, None, seconds, reason=reason)
        )

    def _store_result(self, folder: Path, config: dict, result, training: dict) -> None:
        from benchmark.training import evaluate_probs, predict

        if not result.ok:
            metrics = {"status": "failed", "reason": result.failed_reason, "epochs": result.epochs,
                       "train_seconds": round(result.train_seconds, 2), "finished_at": _now()}  # fmt: skip
            self.store.write_entry(folder, config=config, metrics=metrics, history=result.history)
            self._record(MemberOutcome(config["id"], config["name"], "failed", None,
                                       result.train_seconds, reason=result.failed_reason))  # fmt: skip
            return
        _, x_val, x_test = self._prepare(config["preprocess"], self._input_size(config))
        if result.val_probs is not None and result.test_probs is not None:
            val_probs, test_probs = result.val_probs, result.test_probs
            _, ips = predict(result.model, x_val[:512])  # the inference speed, from a sample
        else:
            val_probs, ips = predict(result.model, x_val)
            test_probs, _ = predict(result.model, x_test)
        val = evaluate_probs(val_probs, self.data.y_val)
        reason = ""
        if result.stopped_by_budget:
            reason = f"stopped by the budget after {result.epochs} of {training['epochs']} epochs"
        metrics = {
            "status": "done",
            "reason": reason,
            "val_accuracy": val["accuracy"],
            "val_loss": val["loss"],
            "params": int(result.model.count_params()),
            "flops": _flops(result.model),
            "train_seconds": round(result.train_seconds, 2),
            "epochs": int(result.epochs),
            "train_images_per_second": round(result.images_per_second, 1),
            "inference_images_per_second": round(ips, 1),
            "finished_at": _now(),
            **result.extra,
        }
        folder.mkdir(parents=True, exist_ok=True)
        save_model(result.model, folder / "model.keras")
        self.store.write_entry(folder, config=config, metrics=metrics, val_probs=val_probs,
                               test_probs=test_probs, history=result.history)  # fmt: skip
        self._record(MemberOutcome(config["id"], config["name"], "done", val["accuracy"],
                                   result.train_seconds, reason=reason))  # fmt: skip

    def _input_size(self, config: dict) -> int | None:
        return config["input_size"] if config.get("strategy") is None else None

    def _record(self, outcome: MemberOutcome) -> None:
        self.outcomes.append(outcome)
        if outcome.kept:
            head = "kept   "
        else:
            head = {"done": "done   ", "failed": "FAILED ", "skipped": "skipped"}.get(
                outcome.status, outcome.status
            )
        acc = f"val_accuracy {outcome.val_accuracy:.4f}" if outcome.val_accuracy is not None else ""
        took = "" if outcome.kept else f" in {budget_mod.format_duration(outcome.seconds)}"
        why = f" ({outcome.reason})" if outcome.reason else ""
        self.progress(f"    {head} {outcome.name} [{outcome.id}] {acc}{took}{why}")

    def train(self, task: Task, hp, training: dict, augment: list, *, seed: int,
              epochs: int | None = None, member_key: str | None = None):  # fmt: skip
        """Build and train ``task``'s model with ``hp`` (a HyperParameters); a FitResult."""
        import keras

        import zoo
        from benchmark import distributed
        from benchmark import training as training_mod

        spec, d = task.spec, self.data
        keras.backend.clear_session()
        keras.utils.set_random_seed(seed)
        size = spec.input_size if spec.strategy is None else None
        x_train, x_val, x_test = self._prepare(spec.preprocess, size)
        y_train = d.y_train
        if task.bootstrap is not None:
            rng = np.random.default_rng(task.bootstrap["seed"] + 1000 * self.seed)
            idx = rng.integers(0, len(y_train), size=len(y_train))
            x_train, y_train = x_train[idx], y_train[idx]
        epochs = int(epochs or training["epochs"])
        tb = (
            str(self.store.root / "tensorboard" / member_key)
            if self.tensorboard and member_key
            else None
        )
        if spec.strategy is not None:
            return self._train_transfer(
                task, hp, training, (x_train, y_train, x_val, x_test), seed, epochs, tb, member_key
            )
        entry = zoo.get(spec.architecture)
        with distributed.scope(self._strategy):
            model = entry.build(hp, input_shape=x_train.shape[1:], num_classes=d.num_classes)
            _check_hp(spec, hp)
            return training_mod.fit(
                model, x_train, y_train, x_val, d.y_val, training, num_classes=d.num_classes,
                augment=augment, seed=seed, epochs=epochs, deadline=self.clock.deadline,
                jit_compile=bool(entry.extra.get("jit_compile", False)), tensorboard_dir=tb,
                verbose=self.verbose,
            )  # fmt: skip

    def _train_transfer(self, task, hp, training, arrays, seed, epochs, tb, key):
        """Pretrained members: benchmark.transfer.run_strategy trains them; wrapped as a FitResult.

        ``arrays`` are (x_train, y_train, x_val, x_test) after the member's preprocessing, so the
        probabilities feature extraction computes from its cached features match ``model``'s.
        """
        import keras

        from benchmark import transfer
        from benchmark.training import (
            DeadlineStop,
            FitResult,
            NaNGuard,
            _has_nan,
            tensorboard_callback,
        )

        spec, d = task.spec, self.data
        x_train, y_train, x_val, x_test = arrays
        data = dataclasses.replace(d, x_train=x_train, y_train=y_train, x_val=x_val, x_test=x_test)
        deadline, nan_guard = DeadlineStop(self.clock.deadline), NaNGuard()
        callbacks = [nan_guard, deadline]
        # Feature extraction stops its heads by its own ``patience`` option; a second EarlyStopping
        # would cut the chosen head's refit short of what its search trial ran.
        if training["early_stopping_patience"] and spec.strategy != "feature-extraction":
            callbacks.append(keras.callbacks.EarlyStopping(
                monitor="val_accuracy", mode="max", patience=int(training["early_stopping_patience"]),
                restore_best_weights=True))  # fmt: skip
        if tb:
            callbacks.append(tensorboard_callback(tb))
        kwargs = {"cache_dir": str(self.store.root / "cache" / "transfer"), "epochs": epochs,
                  "batch_size": int(training["batch_size"]), "seed": seed,
                  "learning_rate": float(training["learning_rate"]), "callbacks": callbacks}  # fmt: skip
        options = dict(spec.transfer)
        head = {"max_trials": options.pop("head_trials")} if "head_trials" in options else {}
        if key:  # the head search of feature extraction lives in the run's tuner folder: resumable
            head.update(
                directory=str(self.store.tuner_dir), project_name=f"head-{_slug(spec.name)}-{key}"
            )
        kwargs.update(tuner=head, options=options)
        if spec.input_size and "input_size" not in hp.values:
            hp.values["input_size"] = spec.input_size  # the backbone reads its input side from hp
        start = time.perf_counter()
        result = transfer.run_strategy(spec.strategy, spec.architecture, hp, data, **kwargs)
        seconds = time.perf_counter() - start
        history = result.history
        reason = ""
        if nan_guard.fired_at is not None or _has_nan(history):
            reason = "loss became NaN/inf (TerminateOnNaN)"
        done = len(history)
        info = {f"transfer_{k}": v for k, v in (result.info or {}).items()
                if isinstance(v, (int, float, str, bool)) or v is None}  # fmt: skip
        return FitResult(model=result.model, history=history, epochs=done, train_seconds=seconds,
                         images_per_second=done * len(x_train) / seconds if seconds > 0 else 0.0,
                         stopped_by_budget=deadline.stopped, failed_reason=reason, extra=info,
                         val_probs=result.val_probs, test_probs=result.test_probs)  # fmt: skip

    # ---- a search -----------------------------------------------------------------------------------
    def _run_search(self, task: Task, role: str | None) -> None:
        import keras_tuner

        from benchmark import tuning

        spec = task.spec
        settings = task.tune
        key_def = self._definition(task, spec.hp, task.training, spec.augment)
        key_def["tune"] = {k: v for k, v in settings.items() if k not in ("restore", "top_k")}
        project = f"{_slug(spec.name)}-{member_id(key_def)}"
        fixed = keras_tuner.HyperParameters()
        for name, value in spec.hp.items():
            fixed.Fixed(name, value)

        def declare(hp):
            import zoo

            training, _ = tuning.declare_training_hps(
                hp, settings["search"], task.training, spec.augment
            )
            entry = zoo.get(spec.architecture)
            if spec.strategy is None:
                return entry.build(
                    hp, input_shape=self.data.input_shape, num_classes=self.data.num_classes
                )
            return None  # pretrained: only the training hps are declared up front

        def train_fn(hp, epochs, seed):
            training, augment = tuning.declare_training_hps(
                hp, settings["search"], task.training, spec.augment
            )
            return self.train(task, hp, training, augment, seed=seed, epochs=epochs)

        start = time.perf_counter()
        try:
            tuner = tuning.ZooTuner(
                tuning.make_oracle(settings, fixed, seed=self.seed), tuning.SpaceModel(declare), train_fn,
                directory=self.store.tuner_dir, project_name=project, epochs=settings["epochs"],
                seed=self.seed, deadline=self.clock.deadline,
            )  # fmt: skip
            tuner.search(verbose=self.verbose)
        except Exception as exc:  # noqa: BLE001 - weights unavailable, every trial NaN, ...
            if role == "worker" or isinstance(exc, ZoobenchError):
                raise
            mid = member_id(key_def)
            self._store_failure(self.store.member_dir(mid),
                                self._config(mid, task.label, task, spec.hp, task.training, spec.augment),
                                exc, time.perf_counter() - start)  # fmt: skip
            return
        if role == "worker":
            return
        trials = tuner.best_trials(settings["top_k"])
        if not trials:
            self.progress(f"    no completed trial for {task.label}")
            return
        keep = set()
        for rank, trial in enumerate(trials):
            keep.add(trial.trial_id)
            self._member_from_trial(task, tuner, trial, rank, len(trials))
        removed = tuner.prune(keep)
        if removed:
            log.info("pruned %d trial models of %s", removed, project)

    def _member_from_trial(self, task: Task, tuner, trial, rank: int, k: int) -> None:
        import keras
        import pandas as pd

        from benchmark import tuning
        from benchmark.training import FitResult

        spec, settings = task.spec, task.tune
        arch_hp, train_hp = tuning.split_values(trial.hyperparameters.values)
        augment = spec.augment
        if "augment" in train_hp:
            augment = list(settings["search"]["augment"][train_hp.pop("augment")])
        training = {**task.training, **train_hp}
        # Past the deadline a best trial is restored, never retrained: the budget is not overrun.
        restore = settings["restore"] or self.clock.expired
        if restore:
            training["epochs"] = int(
                trial.hyperparameters.values.get("tuner/epochs", settings["epochs"])
            )
        name = task.label if k == 1 else f"{task.label} [top {rank + 1}]"
        mid = member_id(
            {**self._definition(task, arch_hp, training, augment), "trial": trial.trial_id}
        )
        config = self._config(mid, name, task, arch_hp, training, augment,
                              extra={"tuner": {"project": tuner.project_name, "trial": trial.trial_id,
                                               "algorithm": settings["algorithm"],
                                               "score": trial.score}})  # fmt: skip

        def restore_trial():
            trial_dir = tuner.trial_dir(trial.trial_id)
            keras.backend.clear_session()
            model = keras.saving.load_model(trial_dir / tuning.TRIAL_MODEL)
            history = pd.read_csv(trial_dir / tuning.TRIAL_HISTORY)
            costs = atomic.read_json(trial_dir / tuning.TRIAL_COSTS)
            return FitResult(model=model, history=history, epochs=len(history),
                             train_seconds=costs["train_seconds"],
                             images_per_second=costs["images_per_second"])  # fmt: skip

        def retrain():
            return self.train(
                task, _fixed_hp(arch_hp), training, augment, seed=task.seed, member_key=mid
            )

        self._keep_or_train(mid, config, training, restore_trial if restore else retrain)

    # ---- the end ------------------------------------------------------------------------------------
    def _finish(self) -> None:
        if self.profile.ensembles_enabled:
            self._ensembles()
        # run.json records the finish first, so the report shows the wall time and a finished run.
        self._write_run_json(finished=True)
        report = None
        if self.profile.report_enabled:
            report = self._report()
        from benchmark.api import leaderboard

        board = leaderboard(self.store)
        if (report is None or not self.store.leaderboard_csv.is_file()) and len(board):
            with atomic.atomic_path(self.store.leaderboard_csv) as tmp:
                board.to_csv(tmp, index=False)
        self.report_path = report
        if len(board):
            from tabulate import tabulate

            cols = [c for c in ("model", "kind", "val_accuracy", "test_accuracy", "params", "train_seconds")
                    if c in board.columns]  # fmt: skip
            self.progress("leaderboard (top 10, sorted by validation accuracy):")
            for line in tabulate(board[cols].head(10), headers="keys", tablefmt="github",
                                 showindex=False, floatfmt=".4f").splitlines():  # fmt: skip
                self.progress("  " + line)
        if report:
            self.progress(f"report: {report}")
        self.progress(
            f"finished in {budget_mod.format_duration(self.clock.elapsed)}: {self.store.root}"
        )

    def _ensembles(self) -> None:
        ok = [m for m in self.store.members() if m.ok]
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
            log.warning("building the ensembles failed", exc_info=exc)
            self.progress(f"ensembles: FAILED ({_short(exc)}); the members are kept")

    def _ensemble_config(self) -> dict[str, Any]:
        return {k: v for k, v in self.profile.ensembles.items() if k != "enabled"}

    def _check_ensemble_config(self) -> None:
        """A typo in [ensembles] fails before the training, not after it."""
        if not self.profile.ensembles_enabled:
            return
        from ensembles.build import resolve_config

        try:
            resolve_config(self._ensemble_config())
        except ZoobenchError as exc:
            raise ZoobenchError(f"profile {self.profile.source}: {exc}") from None

    def _report(self) -> Path | None:
        from reports import build_report

        try:
            return Path(build_report(self.store))
        except Exception as exc:  # noqa: BLE001 - `zoobench report RUN` can rebuild it later
            log.warning("building the report failed", exc_info=exc)
            self.progress(
                f"report: FAILED ({_short(exc)}); rebuild it with `zoobench report {self.store.root}`"
            )
            return None


# ---- helpers --------------------------------------------------------------------------------------------


def _apply(task: Task, decision: budget_mod.Decision) -> None:
    changes = decision.changes
    if "epochs" in changes:
        task.training["epochs"] = changes["epochs"]
    if task.tune is not None:
        if "trials" in changes:
            task.tune["max_trials"] = changes["trials"]
            task.tune["top_k"] = min(task.tune["top_k"], changes["trials"])
        if "trial_epochs" in changes:
            task.tune["epochs"] = changes["trial_epochs"]


def _tune_summary(tune: dict) -> str:
    return f"{tune['algorithm']} x{tune['max_trials']} ({tune['epochs']} ep)"


def _fixed_hp(values: dict[str, Any]):
    import keras_tuner

    hp = keras_tuner.HyperParameters()
    for name, value in values.items():
        hp.values[name] = value
    return hp


def _check_hp(spec: MemberSpec, hp) -> None:
    """A profile's hp key the architecture never asked for is a typo: say so, naming both."""
    unknown = sorted(set(spec.hp) - {p.name for p in hp.space})
    if unknown:
        known = ", ".join(sorted(p.name for p in hp.space))
        raise ZoobenchError(
            f"member {spec.name!r}: {spec.architecture} has no hyperparameter {', '.join(unknown)} (it has: {known})"
        )


def _resize(images: np.ndarray, size: int) -> np.ndarray:
    from benchmark.preprocess import resize_image

    return np.stack([resize_image(img, (size, size)) for img in images])


def _flops(model) -> int | None:
    from zoo.flops import count_flops

    try:
        return int(count_flops(model))
    except Exception as exc:  # noqa: BLE001 - a cost figure is never worth a failed member
        log.warning("could not count FLOPs of %s: %s", model.name, exc)
        return None


def _is_weights_unavailable(exc: BaseException) -> bool:
    return any(cls.__name__ == "WeightsUnavailable" for cls in type(exc).__mro__)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in text.lower()).strip("-")[:40] or "member"
