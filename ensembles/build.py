"""Build every configured ensemble from the run store's members and store them beside the members.

The runner calls :func:`build_ensembles` after training. Everything here is fit on the members'
validation probabilities and ``data/y_val.npy``; test probabilities are only *combined* with the
learned weights, and ``data/y_test.npy`` is never read. Boosting's weights are the alphas its
rounds recorded from their training-split errors (``benchmark.train.boosting``): nothing of val or test.
Ensembles are cheap, so each call recomputes them all from scratch and replaces what an earlier
call stored.

Validation figures are never in-sample. An ensemble whose weights are fit on validation (top-k's
choice, greedy's picks, the stacker) is scored out-of-fold (:mod:`ensembles.crossfit`): its stored
validation probabilities come from copies fit on the other folds, while its weights and its test
probabilities come from the refit on all of validation. Plain averages fit nothing and keep their
plain validation score. Temperature scaling (:mod:`ensembles.calibration`, ``calibrate``) follows
the same rule for every member and ensemble.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from benchmark.config.schema import ENSEMBLE_DEFAULTS, ENSEMBLE_METHODS, resolve_ensembles
from benchmark.formatting import utc_now
from benchmark.metrics import accuracy, log_loss
from benchmark.naming import slug
from benchmark.store.records import EnsembleConfig, Metrics, Status
from benchmark.store.runstore import Entry, RunStore
from benchmark.train import boosting
from ensembles.calibration import Calibration, calibrate
from ensembles.crossfit import Split, out_of_fold, validation_folds
from ensembles.export import write_best
from ensembles.methods import (
    AverageEnsemble,
    BoostedAverage,
    GreedyEnsemble,
    StackingEnsemble,
    WeightedAverage,
    disagreement_matrix,
    samme_vote,
)

log = logging.getLogger(__name__)

# The profile's [ensembles] table (every key, its default, its checks) is plain data in
# benchmark.config.schema, checked when the profile is parsed; documented in docs/CONTRACTS.md.
METHODS = ENSEMBLE_METHODS
DEFAULTS: dict[str, Any] = ENSEMBLE_DEFAULTS
OUT_OF_FOLD = "out-of-fold"  # metrics.json "val_scoring" of an ensemble fit on validation


def resolve_config(config: dict[str, Any] | None) -> dict[str, Any]:
    """The [ensembles] table with defaults filled in; unknown keys and bad values are user errors."""
    return resolve_ensembles(config)


@dataclass
class Fitted:
    """One ensemble fit in memory, before it is written to the store.

    ``val_probs`` are out-of-fold when ``folds`` is set (the method was fit on validation);
    ``val_accuracy_in_sample`` is then the optimistic figure of the refit, kept for comparison.
    """

    name: str
    method: str
    members: list[Entry]
    weights: list[float] | None
    params: dict[str, Any]
    val_probs: np.ndarray
    test_probs: np.ndarray
    stacker: StackingEnsemble | None = None
    fit_seconds: float = 0.0
    folds: int | None = None
    val_accuracy_in_sample: float | None = None
    calibration: Calibration | None = None


def _fit_average(
    name,
    method,
    make: Callable[[], WeightedAverage],
    members,
    val,
    test,
    y_val,
    params,
    splits: list[Split] | None = None,
) -> Fitted:
    """Fit ``make()`` on all of validation; with ``splits`` (a method that learns from
    validation), its validation probabilities are cross-fitted over them instead of in-sample."""
    start = time.perf_counter()
    est = make().fit(val, y_val)
    keep = [i for i, w in enumerate(est.weights_) if w > 0]
    chosen = [members[i] for i in keep]
    weights = [float(est.weights_[i]) for i in keep]
    sub = WeightedAverage.from_weights(weights, val[0].shape[1])
    val_probs = sub.predict_proba([val[i] for i in keep])
    fitted = Fitted(
        name=name,
        method=method,
        members=chosen,
        weights=weights,
        params=params,
        val_probs=val_probs,
        test_probs=sub.predict_proba([test[i] for i in keep]),
    )
    if splits is not None:
        fitted.val_accuracy_in_sample = accuracy(val_probs, y_val)
        fitted.val_probs = out_of_fold(make, val, y_val, splits)
        fitted.folds = len(splits)
    fitted.fit_seconds = time.perf_counter() - start
    return fitted


def fit_ensembles(
    members: list[Entry], y_val: np.ndarray, config: dict[str, Any], seed: int
) -> list[Fitted]:
    """Fit every configured method on ``members``' validation probabilities (no store writes).

    Methods fit on validation (top-k, greedy, stacking) are scored out-of-fold over
    ``cv_folds`` stratified folds seeded by ``seed`` (stacking over its own ``stacker_cv``); with
    too few validation rows for two folds they are skipped, never scored in-sample.
    """
    cfg = resolve_config(config)
    val = [m.probs("val", calibrated=False) for m in members]
    test = [m.probs("test", calibrated=False) for m in members]
    fitted: list[Fitted] = []
    methods = cfg["methods"]
    enough = len(members) >= cfg["min_members"]
    if not enough:
        log.info(
            "ensembles: %d member(s), fewer than min_members=%d", len(members), cfg["min_members"]
        )
    splits = _splits(y_val, cfg, seed) if enough and {"top-k", "greedy"} & set(methods) else None
    if enough and "average-all" in methods:
        fitted.append(
            _fit_average("average-all", "average", AverageEnsemble, members, val, test, y_val, {})
        )
    if enough and "top-k" in methods and cfg["top_k"] < len(members) and splits:
        k = cfg["top_k"]
        fitted.append(
            _fit_average(
                f"top-{k}",
                "top-k",
                lambda: AverageEnsemble(top_k=k),
                members,
                val,
                test,
                y_val,
                {"top_k": k},
                splits,
            )
        )
    if enough and "greedy" in methods and splits:
        params = {
            "size": cfg["greedy_size"],
            "init_size": cfg["greedy_init"],
            "use_best": cfg["greedy_use_best"],
        }
        fitted.append(
            _fit_average(
                "greedy",
                "greedy",
                lambda: GreedyEnsemble(**params),
                members,
                val,
                test,
                y_val,
                params,
                splits,
            )
        )
    if enough and "stacking" in methods:
        start = time.perf_counter()
        est = StackingEnsemble(
            stacker=cfg["stacker"],
            C=cfg["stacker_C"],
            hidden_units=cfg["stacker_hidden"],
            cv=cfg["stacker_cv"],
            seed=seed,
        )
        try:
            est.fit(val, y_val)
        except ValueError as exc:
            log.warning("ensembles: stacking skipped: %s", exc)
        else:
            fitted.append(
                Fitted(
                    name=f"stacking-{cfg['stacker']}",
                    method="stacking",
                    members=list(members),
                    weights=None,
                    params=est.settings(),
                    val_probs=est.oof_probs_,  # out-of-fold: an honest validation score
                    test_probs=est.predict_proba(test),
                    stacker=est,
                    fit_seconds=time.perf_counter() - start,
                    folds=est.cv_folds_,
                    val_accuracy_in_sample=accuracy(est.predict_proba(val), y_val),
                )
            )
    for method in ("bagging", "seeds"):
        if method not in methods:
            continue
        for gname, idx in sorted(_groups(members, method).items()):
            if len(idx) < 2:
                log.info(
                    "ensembles: %s group %r has %d member(s); skipped", method, gname, len(idx)
                )
                continue
            fitted.append(
                _fit_average(
                    f"{method}-{slug(gname, 'group')}",
                    method,
                    AverageEnsemble,
                    [members[i] for i in idx],
                    [val[i] for i in idx],
                    [test[i] for i in idx],
                    y_val,
                    {"group": f"{method}:{gname}"},
                )
            )
    if "boosting" in methods:
        fitted += _fit_boosting(members, val, test, y_val)
    return fitted


def _splits(y_val: np.ndarray, cfg: dict[str, Any], seed: int) -> list[Split] | None:
    """The validation folds of every out-of-fold score, or None (logged) when there are too few
    rows: what needs them is then skipped."""
    try:
        return validation_folds(y_val, cfg["cv_folds"], seed)
    except ValueError as exc:
        log.warning("ensembles: no out-of-fold scores (%s): fitted ensembles are skipped", exc)
        return None


def _groups(members: list[Entry], method: str) -> dict[str, list[int]]:
    """Group name -> indices of the members whose config ``group`` is ``"<method>:<name>"``."""
    groups: dict[str, list[int]] = {}
    for i, m in enumerate(members):
        group = m.config.get("group") or ""
        if group.startswith(f"{method}:"):
            groups.setdefault(group.split(":", 1)[1], []).append(i)
    return groups


def _fit_boosting(members: list[Entry], val, test, y_val: np.ndarray) -> list[Fitted]:
    """One SAMME ensemble a boosting group: its linked rounds (``benchmark.train.boosting.chain``: a
    stale or discarded round is left out), weighted by the alphas the rounds recorded. The alphas
    come from training-split errors; validation only scores the result (and the discrete vote)."""
    fitted = []
    position = {m.id: i for i, m in enumerate(members)}
    for gname, idx in sorted(_groups(members, "boosting").items()):
        rounds = boosting.chain([members[i] for i in idx])
        if len(rounds) < 2:
            log.info(
                "ensembles: boosting group %r has %d usable round(s); skipped", gname, len(rounds)
            )
            continue
        at = [position[r.id] for r in rounds]
        stats = [r.metrics["boosting"] for r in rounds]
        alphas = [float(s["alpha"]) for s in stats]
        params = {
            "group": f"boosting:{gname}",
            "combine": "alpha-weighted average of the rounds' probabilities (weights = alpha / sum)",
            "rounds": [int(r.config["boosting"]["round"]) for r in rounds],
            "alphas": alphas,
            "errors": [float(s["error"]) for s in stats],
            "weighting": rounds[0].config["boosting"].get("weighting"),
            "vote_val_accuracy": accuracy(samme_vote([val[i] for i in at], alphas), y_val),
        }
        fitted.append(
            _fit_average(
                f"boosting-{slug(gname, 'group')}",
                "boosting",
                lambda alphas=alphas: BoostedAverage(alphas),
                rounds,
                [val[i] for i in at],
                [test[i] for i in at],
                y_val,
                params,
            )
        )
    return fitted


def _metrics(fit: Fitted, y_val: np.ndarray) -> Metrics:
    """Validation scores and costs; the members' costs add up (every member runs per image)."""
    mets = [m.metrics for m in fit.members]

    def total(key: str) -> float | None:
        values = [m.get(key) for m in mets]
        return None if any(v is None for v in values) else float(sum(values))

    params = total("params")
    if params is not None and fit.stacker is not None:
        params += fit.stacker.n_params_
    ips = [m.get("inference_images_per_second") for m in mets]
    seconds_per_image = None if any(not v for v in ips) else sum(1.0 / v for v in ips)
    scoring: dict[str, Any] = {"val_scoring": "nothing fit on validation"}
    if fit.folds is not None:
        scoring = {
            "val_scoring": OUT_OF_FOLD,
            "cv_folds": fit.folds,
            "val_accuracy_in_sample": fit.val_accuracy_in_sample,
        }
    return Metrics(
        Status.DONE,
        val_accuracy=accuracy(fit.val_probs, y_val),
        val_loss=log_loss(fit.val_probs, y_val),
        params=None if params is None else int(params),
        flops=None if total("flops") is None else int(total("flops")),
        train_seconds=total("train_seconds"),
        inference_images_per_second=None if not seconds_per_image else 1.0 / seconds_per_image,
        finished_at=utc_now(),
        extra={**scoring, "fit_seconds": round(fit.fit_seconds, 4), "n_members": len(fit.members)},
    )


def write_fitted(store: RunStore, fit: Fitted, y_val: np.ndarray) -> Entry:
    """Replace ``ensembles/<name>/`` with ``fit`` (the store writes its files, metrics.json last)."""
    path = store.ensemble_dir(fit.name)
    if path.exists():
        shutil.rmtree(path)  # a clean recompute: no stale stacker.npz or model from an older run
    config = EnsembleConfig(
        name=fit.name,
        method=fit.method,
        members=[m.id for m in fit.members],
        member_names=[m.name for m in fit.members],
        weights=fit.weights,
        params=fit.params,
        stacker=None if fit.stacker is None else fit.stacker.settings(),
    )
    entry = store.write_entry(
        path,
        config=config,
        metrics=_metrics(fit, y_val),
        val_probs=fit.val_probs,
        test_probs=fit.test_probs,
        stacker=None if fit.stacker is None else fit.stacker.arrays(),
    )
    if fit.calibration is not None:
        cal = fit.calibration
        store.write_calibration(path, cal.record(), cal.val_probs, cal.test_probs)
    return entry


def write_diversity(store: RunStore, members: list[Entry]) -> None:
    """Pairwise validation disagreement between members (reports draw it as a heatmap)."""
    probs = [m.probs("val", calibrated=False) for m in members]
    matrix = disagreement_matrix(probs) if members else np.zeros((0, 0))
    store.write_diversity([m.id for m in members], [m.name for m in members], matrix)


def usable_members(store: RunStore) -> list[Entry]:
    """Complete, successful, intact members (hashes as written) that have both probability files."""
    notes: list[str] = []
    out = []
    for m in store.members(notes=notes):
        if not m.ok:
            continue
        if not m.has_probs():
            log.warning("ensembles: member %s has no stored probabilities; skipped", m.id)
        elif problems := m.verify():
            log.warning("ensembles: member %s left out: %s", m.id, "; ".join(problems))
        else:
            out.append(m)
    for note in notes:
        log.warning("ensembles: %s", note)
    return out


def select_best(members: list[Entry], ensembles: list[Entry]) -> Entry | None:
    """The first entry in the leaderboard's order (``benchmark.store.runstore.rank_key``) that can be used.

    Validation accuracy, ties to the lower validation loss, then members before ensembles (on a
    full tie the cheaper choice wins), then the name: the report names the same best.
    """
    candidates = [
        e for e in [*members, *ensembles] if e.ok and e.metrics.get("val_accuracy") is not None
    ]
    return min(candidates, key=lambda e: e.rank_key) if candidates else None


def build_ensembles(store: RunStore, config: dict[str, Any] | None, seed: int) -> list[Entry]:
    """Fit, store and return every ensemble in the profile's [ensembles] table; export the best.

    Failed, skipped and damaged members are left out. The set is written to ``ensembles.new/``
    and swapped in whole, so ``ensembles/`` always matches one complete call (no stale folders
    of a method since removed) and a failed call leaves the previous set, best model included.
    """
    cfg = resolve_config(config)
    members = usable_members(store)
    y_val = store.labels("val")
    fitted = fit_ensembles(members, y_val, cfg, seed)
    calibrate_entries(store, members, fitted, y_val, cfg, seed)
    # Built beside the old set and swapped in whole: a failure keeps the old ensembles and best.
    with store.staged_ensembles() as staged:
        written = [write_fitted(staged, f, y_val) for f in fitted]
        write_diversity(staged, members)
        write_best(staged, select_best(members, written), export=cfg["export_best"])
    entries = [store.ensemble(e.id) for e in written]
    for e in entries:
        m = e.metrics
        scoring = (
            f" ({m['cv_folds']}-fold out-of-fold)" if m.get("val_scoring") == OUT_OF_FOLD else ""
        )
        log.info("ensemble %s: val accuracy %.4f%s", e.name, m["val_accuracy"], scoring)
    return entries


def calibrate_entries(
    store: RunStore,
    members: list[Entry],
    fitted: list[Fitted],
    y_val: np.ndarray,
    cfg: dict[str, Any],
    seed: int,
) -> None:
    """Temperature-scale every member (stored in its folder now) and every fitted ensemble
    (``Fitted.calibration``, stored with it), on the ``cv_folds`` validation folds.

    Off (``calibrate = false``), or with too few validation rows for two folds, the members'
    earlier calibrations are removed: a model is never scaled by a temperature this run did not fit.
    """
    splits = _splits(y_val, cfg, seed) if cfg["calibrate"] and (members or fitted) else None
    for m in members:
        if splits is None:
            store.clear_calibration(m.path)
            continue
        raw = [m.probs(split, calibrated=False) for split in ("val", "test")]
        cal = calibrate(*raw, y_val, splits, seed)
        store.write_calibration(m.path, cal.record(), cal.val_probs, cal.test_probs)
        log.info("calibration: %s T=%.3f", m.name, cal.temperature)
    for f in fitted:
        if splits is not None:
            f.calibration = calibrate(f.val_probs, f.test_probs, y_val, splits, seed)
            log.info("calibration: %s T=%.3f", f.name, f.calibration.temperature)
