"""Build every configured ensemble from the run store's members and store them beside the members.

The runner calls :func:`build_ensembles` after training. Everything here is fit on the members'
validation probabilities and ``data/y_val.npy``; test probabilities are only *combined* with the
learned weights, and ``data/y_test.npy`` is never read. Boosting's weights are the alphas its
rounds recorded from their training-split errors (``benchmark.train.boosting``): nothing of val or test.
Ensembles are cheap, so each call recomputes them all from scratch and replaces what an earlier
call stored.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from benchmark import atomic
from benchmark.config.schema import ENSEMBLE_DEFAULTS, ENSEMBLE_METHODS, resolve_ensembles
from benchmark.formatting import utc_now
from benchmark.metrics import accuracy, log_loss
from benchmark.naming import slug
from benchmark.store.runstore import Entry, RunStore
from benchmark.train import boosting
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


def resolve_config(config: dict[str, Any] | None) -> dict[str, Any]:
    """The [ensembles] table with defaults filled in; unknown keys and bad values are user errors."""
    return resolve_ensembles(config)


@dataclass
class Fitted:
    """One ensemble fit in memory, before it is written to the store."""

    name: str
    method: str
    members: list[Entry]
    weights: list[float] | None
    params: dict[str, Any]
    val_probs: np.ndarray
    test_probs: np.ndarray
    stacker: StackingEnsemble | None = None
    fit_seconds: float = 0.0


def _fit_average(name, method, est: WeightedAverage, members, val, test, y_val, params) -> Fitted:
    start = time.perf_counter()
    est.fit(val, y_val)
    keep = [i for i, w in enumerate(est.weights_) if w > 0]
    chosen = [members[i] for i in keep]
    weights = [float(est.weights_[i]) for i in keep]
    sub = WeightedAverage.from_weights(weights, val[0].shape[1])
    return Fitted(
        name=name,
        method=method,
        members=chosen,
        weights=weights,
        params=params,
        val_probs=sub.predict_proba([val[i] for i in keep]),
        test_probs=sub.predict_proba([test[i] for i in keep]),
        fit_seconds=time.perf_counter() - start,
    )


def fit_ensembles(
    members: list[Entry], y_val: np.ndarray, config: dict[str, Any], seed: int
) -> list[Fitted]:
    """Fit every configured method on ``members``' validation probabilities (no store writes)."""
    cfg = resolve_config(config)
    val = [m.probs("val") for m in members]
    test = [m.probs("test") for m in members]
    fitted: list[Fitted] = []
    methods = cfg["methods"]
    enough = len(members) >= cfg["min_members"]
    if not enough:
        log.info(
            "ensembles: %d member(s), fewer than min_members=%d", len(members), cfg["min_members"]
        )
    if enough and "average-all" in methods:
        fitted.append(
            _fit_average("average-all", "average", AverageEnsemble(), members, val, test, y_val, {})
        )
    if enough and "top-k" in methods and cfg["top_k"] < len(members):
        k = cfg["top_k"]
        fitted.append(
            _fit_average(
                f"top-{k}",
                "top-k",
                AverageEnsemble(top_k=k),
                members,
                val,
                test,
                y_val,
                {"top_k": k},
            )
        )
    if enough and "greedy" in methods:
        params = {
            "size": cfg["greedy_size"],
            "init_size": cfg["greedy_init"],
            "use_best": cfg["greedy_use_best"],
        }
        fitted.append(
            _fit_average(
                "greedy", "greedy", GreedyEnsemble(**params), members, val, test, y_val, params
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
                    AverageEnsemble(),
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
                BoostedAverage(alphas),
                rounds,
                [val[i] for i in at],
                [test[i] for i in at],
                y_val,
                params,
            )
        )
    return fitted


def _metrics(fit: Fitted, y_val: np.ndarray) -> dict[str, Any]:
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
    return {
        "status": "done",
        "reason": "",
        "val_accuracy": accuracy(fit.val_probs, y_val),
        "val_loss": log_loss(fit.val_probs, y_val),
        "params": None if params is None else int(params),
        "flops": None if total("flops") is None else int(total("flops")),
        "train_seconds": total("train_seconds"),
        "fit_seconds": round(fit.fit_seconds, 4),
        "inference_images_per_second": None if not seconds_per_image else 1.0 / seconds_per_image,
        "n_members": len(fit.members),
        "finished_at": utc_now(),
    }


def write_fitted(store: RunStore, fit: Fitted, y_val: np.ndarray) -> Entry:
    """Replace ``ensembles/<name>/`` with ``fit``: arrays, stacker npz, then metrics.json last."""
    path = store.ensemble_dir(fit.name)
    if path.exists():
        shutil.rmtree(path)  # a clean recompute: no stale stacker.npz or model from an older run
    config = {
        "name": fit.name,
        "method": fit.method,
        "members": [m.id for m in fit.members],
        "member_names": [m.name for m in fit.members],
        "weights": fit.weights,
        "params": fit.params,
    }
    if fit.stacker is not None:
        path.mkdir(parents=True, exist_ok=True)
        with atomic.atomic_path(path / "stacker.npz") as tmp, open(tmp, "wb") as f:
            np.savez(f, **fit.stacker.arrays())
        config["stacker"] = {"file": "stacker.npz", **fit.stacker.settings()}
    return store.write_entry(
        path,
        config=config,
        metrics=_metrics(fit, y_val),
        val_probs=fit.val_probs,
        test_probs=fit.test_probs,
    )


def write_diversity(store: RunStore, members: list[Entry]) -> None:
    """Pairwise validation disagreement between members (reports draw it as a heatmap)."""
    matrix = disagreement_matrix([m.probs("val") for m in members]) if members else np.zeros((0, 0))
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
    # Built beside the old set and swapped in whole: a failure keeps the old ensembles and best.
    with store.staged_ensembles() as staged:
        written = [write_fitted(staged, f, y_val) for f in fitted]
        write_diversity(staged, members)
        write_best(staged, select_best(members, written), export=cfg["export_best"])
    entries = [store.ensemble(e.id) for e in written]
    for e in entries:
        log.info("ensemble %s: val accuracy %.4f", e.name, e.metrics["val_accuracy"])
    return entries
