"""Build every configured ensemble from the run store's members and store them beside the members.

The runner calls :func:`build_ensembles` after training. Everything here is fit on the members'
validation probabilities and ``data/y_val.npy``; test probabilities are only *combined* with the
learned weights, and ``data/y_test.npy`` is never read. Ensembles are cheap, so each call recomputes
them all from scratch and replaces what an earlier call stored.
"""

from __future__ import annotations

import logging
import re
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np

from benchmark import atomic
from benchmark.errors import ZoobenchError
from benchmark.store import Entry, RunStore
from ensembles.export import BEST_DIR, write_best
from ensembles.methods import (
    STACKERS,
    AverageEnsemble,
    GreedyEnsemble,
    StackingEnsemble,
    WeightedAverage,
    accuracy,
    disagreement_matrix,
    log_loss,
)

log = logging.getLogger(__name__)

METHODS = ("average-all", "top-k", "greedy", "stacking", "bagging", "seeds")

# The profile's [ensembles] table: every key, its default. Documented in docs/CONTRACTS.md.
DEFAULTS: dict[str, Any] = {
    "methods": list(METHODS),
    "top_k": 3,
    "greedy_size": 20,
    "greedy_init": 1,
    "greedy_use_best": True,
    "stacker": "logistic",
    "stacker_C": 1.0,
    "stacker_hidden": 32,
    "stacker_cv": 5,
    "min_members": 2,
    "export_best": True,
}


def resolve_config(config: dict[str, Any] | None) -> dict[str, Any]:
    """The [ensembles] table with defaults filled in; unknown keys and bad values are user errors."""
    config = dict(config or {})
    unknown = sorted(set(config) - set(DEFAULTS))
    if unknown:
        raise ZoobenchError(
            f"[ensembles] has unknown key(s) {', '.join(unknown)}; known: {', '.join(DEFAULTS)}"
        )
    out = {**DEFAULTS, **config}
    methods = out["methods"]
    if isinstance(methods, str) or not all(isinstance(m, str) for m in methods):
        raise ZoobenchError(f"[ensembles] methods must be a list of names, got {methods!r}")
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise ZoobenchError(
            f"[ensembles] methods: unknown method(s) {', '.join(bad)}; known: {', '.join(METHODS)}"
        )
    for key in ("top_k", "greedy_size", "stacker_hidden", "min_members"):
        if isinstance(out[key], bool) or not isinstance(out[key], int) or out[key] < 1:
            raise ZoobenchError(f"[ensembles] {key} must be a positive integer, got {out[key]!r}")
    if (
        isinstance(out["greedy_init"], bool)
        or not isinstance(out["greedy_init"], int)
        or (out["greedy_init"] < 0)
    ):
        raise ZoobenchError(
            f"[ensembles] greedy_init must be an integer >= 0, got {out['greedy_init']!r}"
        )
    if (
        isinstance(out["stacker_cv"], bool)
        or not isinstance(out["stacker_cv"], int)
        or (out["stacker_cv"] < 2)
    ):
        raise ZoobenchError(
            f"[ensembles] stacker_cv must be an integer >= 2, got {out['stacker_cv']!r}"
        )
    if out["stacker"] not in STACKERS:
        raise ZoobenchError(
            f"[ensembles] stacker must be one of {', '.join(STACKERS)}, got {out['stacker']!r}"
        )
    c = out["stacker_C"]
    if isinstance(c, bool) or not isinstance(c, (int, float)) or not c > 0:
        raise ZoobenchError(f"[ensembles] stacker_C must be a positive number, got {c!r}")
    for key in ("greedy_use_best", "export_best"):
        if not isinstance(out[key], bool):
            raise ZoobenchError(f"[ensembles] {key} must be true or false, got {out[key]!r}")
    return out


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


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "group"


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


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
            _fit_average(f"top-{k}", "top-k", AverageEnsemble(top_k=k), members, val, test, y_val,
                         {"top_k": k})
        )  # fmt: skip
    if enough and "greedy" in methods:
        params = {"size": cfg["greedy_size"], "init_size": cfg["greedy_init"],
                  "use_best": cfg["greedy_use_best"]}  # fmt: skip
        fitted.append(
            _fit_average(
                "greedy", "greedy", GreedyEnsemble(**params), members, val, test, y_val, params
            )
        )
    if enough and "stacking" in methods:
        start = time.perf_counter()
        est = StackingEnsemble(
            stacker=cfg["stacker"], C=cfg["stacker_C"], hidden_units=cfg["stacker_hidden"],
            cv=cfg["stacker_cv"], seed=seed,
        )  # fmt: skip
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
        groups: dict[str, list[int]] = {}
        for i, m in enumerate(members):
            group = m.config.get("group") or ""
            if group.startswith(f"{method}:"):
                groups.setdefault(group.split(":", 1)[1], []).append(i)
        for gname, idx in sorted(groups.items()):
            if len(idx) < 2:
                log.info(
                    "ensembles: %s group %r has %d member(s); skipped", method, gname, len(idx)
                )
                continue
            fitted.append(
                _fit_average(
                    f"{method}-{_slug(gname)}", method, AverageEnsemble(),
                    [members[i] for i in idx], [val[i] for i in idx], [test[i] for i in idx],
                    y_val, {"group": f"{method}:{gname}"},
                )
            )  # fmt: skip
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
        "finished_at": _now(),
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
    atomic.write_json(
        store.ensembles_dir / "diversity.json",
        {
            "members": [m.id for m in members],
            "names": [m.name for m in members],
            "disagreement": np.round(matrix, 6).tolist(),
        },
    )


def usable_members(store: RunStore) -> list[Entry]:
    """Complete, successful members that have both probability files."""
    out = []
    for m in store.members():
        if not m.ok:
            continue
        if not ((m.path / "val_probs.npy").is_file() and (m.path / "test_probs.npy").is_file()):
            log.warning("ensembles: member %s has no stored probabilities; skipped", m.id)
            continue
        out.append(m)
    return out


def select_best(members: list[Entry], ensembles: list[Entry]) -> Entry | None:
    """The best entry by validation accuracy, ties to the lower validation loss, then the simpler.

    Members come before ensembles and ensembles keep their build order, so on a full tie the cheaper
    choice wins.
    """
    candidates = [
        e for e in [*members, *ensembles] if e.ok and e.metrics.get("val_accuracy") is not None
    ]
    if not candidates:
        return None

    def key(item: tuple[int, Entry]) -> tuple[float, float, int]:
        i, e = item
        loss = e.metrics.get("val_loss")
        return (-float(e.metrics["val_accuracy"]), float("inf") if loss is None else float(loss), i)

    return min(enumerate(candidates), key=key)[1]


def build_ensembles(store: RunStore, config: dict[str, Any] | None, seed: int) -> list[Entry]:
    """Fit, store and return every ensemble in the profile's [ensembles] table; export the best.

    Failed or skipped members are left out. Stale ensemble folders from an earlier call (a method
    since removed from the profile) are deleted, so the folder always matches this call.
    """
    cfg = resolve_config(config)
    members = usable_members(store)
    y_val = store.labels("val")
    fitted = fit_ensembles(members, y_val, cfg, seed)
    keep = {f.name for f in fitted} | {BEST_DIR}
    if store.ensembles_dir.is_dir():
        for old in store.ensembles_dir.iterdir():
            if old.is_dir() and old.name not in keep:
                shutil.rmtree(old)
    entries = [write_fitted(store, f, y_val) for f in fitted]
    write_diversity(store, members)
    for e in entries:
        log.info("ensemble %s: val accuracy %.4f", e.name, e.metrics["val_accuracy"])
    best = select_best(members, entries)
    write_best(store, best, export=cfg["export_best"])
    return entries
