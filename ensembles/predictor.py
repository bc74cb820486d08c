"""Predict with a stored run's best model, one member or one ensemble: the Python API behind predict.

    from ensembles import load_predictor
    p = load_predictor("runs/cpu-quick")            # the exported best (member or ensemble)
    labels = p.predict(images)                       # uint8 RGB, (N, H, W, 3) or a list of arrays
    probs = p.predict_proba(images, tta=True)        # with a horizontal-flip average

Which stored entry, and how its members combine, is decided here; the pictures run through the one
inference path, :class:`benchmark.store.inference.Predictor` (re-exported here): any size is brought
to the run's image size, then each member's recorded preprocessing (``config["preprocess"]``) and
its own input size, as training prepared them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from benchmark.errors import ZoobenchError
from benchmark.store.inference import Predictor, Unit
from benchmark.store.runstore import Entry, RunStore, file_sha256
from ensembles.export import (
    BEST_DIR,
    ensemble_members,
    load_member_model,
    load_stacker,
)
from ensembles.methods import WeightedAverage

log = logging.getLogger(__name__)

__all__ = ["Predictor", "Unit", "check_target", "combiner", "load_predictor", "resolve_entry"]

REFIT_PREFIX = "refit:"  # load_predictor(run, "refit:best"): benchmark.run.refit's retrained "best"


def _run_store(run_dir: str | os.PathLike) -> RunStore:
    store = RunStore(run_dir)
    if not store.exists():
        raise ZoobenchError(f"unknown run {run_dir}: no run.json there (see `zoobench run`)")
    return store


def _image_size(store: RunStore) -> tuple[int, int] | None:
    """(H, W) of the run's images, which members were trained from (None for an old run.json)."""
    shape = store.image_shape()
    return (shape[0], shape[1]) if shape else None


def _class_names(store: RunStore, num_classes: int) -> list[str]:
    names = store.class_names()
    return names if len(names) == num_classes else [str(i) for i in range(num_classes)]


def _choices(store: RunStore) -> str:
    members = [m.id for m in store.members() if m.ok]
    ensembles = [e.name for e in store.ensembles() if e.ok]
    return f"best, a member ID ({', '.join(members) or 'none'}) or an ensemble ({', '.join(ensembles) or 'none'})"


def _resolve(store: RunStore, model: str) -> Entry:
    """The member or ensemble entry that ``model`` names."""
    entry = store.find(model)
    if entry is not None:
        if not entry.ok:
            raise ZoobenchError(
                f"model {model!r} in run {store.root} is {entry.status}: "
                f"{entry.metrics.get('reason') or 'no reason recorded'}"
            )
        return entry
    raise ZoobenchError(f"unknown model {model!r} in run {store.root}; choose {_choices(store)}")


def combiner(
    entry: Entry, num_classes: int, calibrated: bool = False
) -> Callable[[list[np.ndarray]], np.ndarray] | None:
    """How ``entry`` turns its members' probabilities into its own (None for an uncalibrated
    member: nothing to do); ``calibrated`` ends in the entry's temperature, if it has one (what
    its exported model and ``entry.probs("test")`` hold)."""
    base = None
    if entry.is_ensemble and entry.config.get("method") == "stacking":
        base = load_stacker(entry).predict_proba
    elif entry.is_ensemble:
        base = WeightedAverage.from_weights(entry.config["weights"], num_classes).predict_proba
    temperature = entry.temperature if calibrated else None
    if temperature is None:
        return base

    def combine(outs: list[np.ndarray]) -> np.ndarray:
        from ensembles.calibration import apply_temperature

        return apply_temperature(outs[0] if base is None else base(outs), temperature)

    return combine


def _entry_predictor(
    store: RunStore,
    entry: Entry,
    load: Callable[[Entry], Any] = load_member_model,
    description: str | None = None,
    calibrated: bool = True,
) -> Predictor:
    members = ensemble_members(store, entry)
    units = [Unit(load(m), list(m.config.get("preprocess") or [])) for m in members]
    num_classes = int(units[0].model.output_shape[-1])
    return Predictor(
        units,
        _class_names(store, num_classes),
        description or entry.name,
        combiner(entry, num_classes, calibrated),
        image_size=_image_size(store),
    )


def resolve_entry(store: RunStore, model: str) -> Entry:
    """The member or ensemble that ``model`` names: "best" (the exported winner), an ID or a name."""
    info = check_target(store.root, model)
    if model != BEST_DIR:
        return _resolve(store, model)
    return store.member(info["id"]) if info["kind"] == "member" else store.ensemble(info["id"])


def _refit_record(store: RunStore, model: str) -> dict[str, Any]:
    """``refit:<name>``'s record (``benchmark.run.refit``), or a one-line error saying what exists."""
    from benchmark.naming import slug

    name = slug(model[len(REFIT_PREFIX) :], "best")
    record = store.read_refit(name)
    if record is None:
        have = ", ".join(REFIT_PREFIX + n for n in store.refits()) or "none yet"
        raise ZoobenchError(
            f"run {store.root} has no refit {name!r} ({have}); make one with "
            f"`zoobench refit {store.root} --model {name}`"
        )
    return record


def _refit_predictor(store: RunStore, model: str) -> Predictor:
    """``refit:<name>``: the members ``benchmark.run.refit`` retrained on train + validation."""
    from benchmark.modelfile import load_model
    from benchmark.naming import slug

    name = slug(model[len(REFIT_PREFIX) :], "best")
    record = _refit_record(store, model)
    refit = {row["id"] for row in record["members"] if row.get("refit")}
    entry = store.find(record["of"]["key"].split("/", 1)[1]) or resolve_entry(
        store, record["of"]["model"]
    )

    def load(member: Entry):
        if member.id not in refit:
            return load_member_model(member)
        import zoo

        zoo.list_models()  # the zoo's layers become loadable
        return load_model(store.refit_model_path(name, member.id), f"refit member {member.id}")

    # No temperature: it was fit to the original members' validation predictions, and the refit
    # members have trained on those images.
    description = f"{entry.name} (refit on train + validation)"
    return _entry_predictor(store, entry, load, description, calibrated=False)


def check_target(run_dir: str | os.PathLike, model: str = "best") -> dict[str, Any]:
    """Validate the run and model name without loading any model (no TensorFlow import).

    Returns best/config.json for "best", else ``{"id": ..., "kind": "member"|"ensemble"}``.
    """
    store = _run_store(run_dir)
    if model.startswith(REFIT_PREFIX):
        record = _refit_record(store, model)
        return {"id": record["of"]["key"], "kind": "refit", "display_name": record["of"]["name"]}
    if model != BEST_DIR:
        entry = _resolve(store, model)
        return {"id": entry.id, "kind": entry.kind, "display_name": entry.name}
    best = store.best_pointer()
    if best is None:
        raise ZoobenchError(
            f"run {store.root} has no best model yet (no {store.best_dir / 'config.json'}); "
            f"finish the run or pick {_choices(store)}"
        )
    return best


def load_predictor(run_dir: str | os.PathLike, model: str = "best") -> Predictor:
    """A :class:`Predictor` for ``model``: "best", a member ID or an ensemble name of the run, or
    ``refit:<name>`` for its refit on train + validation (``benchmark.run.refit``)."""
    if model.startswith(REFIT_PREFIX):
        return _refit_predictor(_run_store(run_dir), model)
    info = check_target(run_dir, model)
    store = RunStore(run_dir)
    if model != BEST_DIR:
        return _entry_predictor(store, _resolve(store, model))
    folder = store.best_dir
    if info.get("model") and (folder / info["model"]).is_file():
        import zoo

        zoo.list_models()  # imports the zoo's modules (and plugins): their layers become loadable

        path = folder / info["model"]
        if info.get("model_sha256") and file_sha256(path) != info["model_sha256"]:
            raise ZoobenchError(
                f"{path} changed since it was exported (its hash differs): the next `zoobench run` "
                "into this folder exports it again"
            )
        from benchmark.modelfile import load_model  # safe mode; refused code is one line

        fused = load_model(path, f"the best model of run {store.root}")
        num_classes = int(fused.output_shape[-1])
        return Predictor(
            [Unit(fused, list(info.get("preprocess") or []))],
            _class_names(store, num_classes),
            f"best ({info.get('display_name', info.get('id'))})",
            image_size=_image_size(store),
        )
    return _entry_predictor(store, resolve_entry(store, model))
