"""Predict with a stored run's best model, one member or one ensemble: the Python API behind predict.

    from ensembles import load_predictor
    p = load_predictor("runs/cpu-quick")            # the exported best (member or ensemble)
    labels = p.predict(images)                       # uint8 RGB, (N, H, W, 3) or a list of arrays
    probs = p.predict_proba(images, tta=True)        # with a horizontal-flip average

Images of any size are resized to the run's image size (area interpolation when shrinking), then
each member's recorded preprocessing (``config["preprocess"]``) runs and the result is resized to
that member's own input size: the order training used.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from benchmark.data.images import resize_batch
from benchmark.errors import ZoobenchError
from benchmark.store.runstore import Entry, RunStore, file_sha256
from ensembles.export import (
    BEST_DIR,
    ensemble_members,
    load_member_model,
    load_stacker,
)
from ensembles.methods import WeightedAverage

log = logging.getLogger(__name__)

REFIT_PREFIX = "refit:"  # load_predictor(run, "refit:best"): benchmark.run.refit's retrained "best"


@dataclass
class Unit:
    """One Keras model and the preprocessing its inputs need."""

    model: Any
    preprocess: list[dict[str, Any]] = field(default_factory=list)


def _apply_preprocess(images: np.ndarray, steps: list[dict[str, Any]]) -> np.ndarray:
    if not steps:
        return images
    from benchmark.data.preprocess import apply_steps

    return apply_steps(images, steps)


class Predictor:
    """Class probabilities for raw images from one or more models and a combination of them."""

    def __init__(
        self,
        units: list[Unit],
        class_names: Sequence[str],
        description: str,
        combine: Callable[[list[np.ndarray]], np.ndarray] | None = None,
        batch_size: int = 256,
        image_size: tuple[int, int] | None = None,
    ):
        if not units:
            raise ValueError("units must hold at least one model")
        if combine is None and len(units) != 1:
            raise ValueError(f"combine is required with {len(units)} units")
        self.units = units
        self.class_names = list(class_names)
        self.description = description
        self.combine = combine
        self.batch_size = batch_size
        shape = units[0].model.input_shape
        fixed = None if None in shape[1:3] else (int(shape[1]), int(shape[2]))
        # Inputs are brought to the run's image size first; each member's recorded preprocessing
        # then runs at that size and the member's own input size comes last, as in training.
        self.input_size: tuple[int, int] = image_size or fixed or (32, 32)

    def _batch(self, images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        if isinstance(images, np.ndarray) and images.ndim == 3:
            images = images[None]
        if not len(images):
            raise ValueError("images is empty")
        for i, img in enumerate(images):
            img = np.asarray(img)
            if img.ndim != 3 or img.shape[-1] != 3 or img.dtype != np.uint8:
                raise ValueError(
                    f"images[{i}] must be uint8 RGB (H, W, 3), got {img.dtype} {img.shape}"
                )
        return resize_batch(images, self.input_size)

    def _once(self, batch: np.ndarray) -> np.ndarray:
        outs = []
        for unit in self.units:
            x = _apply_preprocess(batch, unit.preprocess)
            want = unit.model.input_shape[1:3]
            if None not in want and tuple(want) != x.shape[1:3]:
                x = resize_batch(x, (int(want[0]), int(want[1])))
            outs.append(np.asarray(unit.model.predict(x, batch_size=self.batch_size, verbose=0)))
        return outs[0] if self.combine is None else self.combine(outs)

    def predict_proba(
        self, images: np.ndarray | Sequence[np.ndarray], tta: bool = False
    ) -> np.ndarray:
        """(N, classes) probabilities; ``tta`` averages them with those of the mirrored images."""
        batch = self._batch(images)
        probs = self._once(batch)
        if tta:
            probs = (probs + self._once(np.ascontiguousarray(batch[:, :, ::-1]))) / 2.0
        return probs

    def predict(self, images: np.ndarray | Sequence[np.ndarray], tta: bool = False) -> np.ndarray:
        """Integer class labels (``class_names[label]`` names them)."""
        return self.predict_proba(images, tta=tta).argmax(axis=1)


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
