"""Export the best member or ensemble as ONE Keras model that takes raw images.

Every member's saved ``model.keras`` becomes a renamed sub-model of a single functional graph; the
combination is built-in layers with fixed weights: a weighted average is a non-trainable ``Dense``
over the concatenated member probabilities (kernel = stacked ``w_i * I``), the logistic stacker is
one ``Dense(softmax)`` holding ``coef_.T`` / ``intercept_`` (sklearn's multinomial ``predict_proba``
is exactly ``softmax(X @ coef_.T + intercept_)``), the MLP stacker two; a calibrated entry ends in
its temperature (``zoo.layers.TemperatureScaling``). The file therefore loads
with ``keras.saving.load_model(path, safe_mode=True)`` after ``zoo.list_models()`` (which
imports the zoo's modules, registering their layers), and nothing else.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from benchmark.errors import ZoobenchError, short_error
from benchmark.formatting import utc_now
from benchmark.store.inference import model_side
from benchmark.store.runstore import BEST as BEST_DIR
from benchmark.store.runstore import Entry, RunStore

log = logging.getLogger(__name__)


def load_member_model(entry: Entry):
    """A member's saved model, loaded in safe mode (only Keras's and the zoo's registered layers)."""
    import zoo

    zoo.list_models()  # imports the zoo's modules (and plugins): their layers become loadable

    if not entry.model_path.is_file():
        raise ZoobenchError(f"member {entry.id} has no saved model at {entry.model_path}")
    if problems := entry.verify():
        raise ZoobenchError(
            f"member {entry.id} in {entry.path} is damaged ({'; '.join(problems)}): the next "
            "`zoobench run` into this folder retrains it"
        )
    from benchmark.modelfile import load_model  # safe mode; refused code is one line naming it

    return load_model(entry.model_path, f"member {entry.id}")


def ensemble_members(store: RunStore, entry: Entry) -> list[Entry]:
    """The member entries an ensemble (or a member itself) is made of, in the stored order."""
    if not entry.is_ensemble:
        return [entry]
    return [store.member(mid) for mid in entry.config["members"]]


def load_stacker(entry: Entry):
    """The stored stacker (npz arrays + JSON settings) of a stacking ensemble."""
    from ensembles.methods import StackingEnsemble

    return StackingEnsemble.from_arrays(entry.config["stacker"], entry.stacker_arrays())


def common_preprocess(members: list[Entry]) -> list[dict[str, Any]] | None:
    """The preprocessing list all members share, or None when they differ (no single input then)."""
    lists = [list(m.config.get("preprocess") or []) for m in members]
    return lists[0] if all(p == lists[0] for p in lists) else None


def outside_preprocess(members: list[Entry]) -> list[dict[str, Any]] | None:
    """The steps a caller must apply to images before the fused model of ``members``.

    ``[]`` when every member's steps can run inside the model as layers
    (``benchmark.data.preprocess.IN_MODEL_STEPS``, e.g. ``deblock``): the fused model holds them per
    member. Otherwise the OpenCV list all members share, or None when they differ (then no single
    model takes the images)."""
    from benchmark.data.preprocess import IN_MODEL_STEPS

    if all(s["name"] in IN_MODEL_STEPS for m in members for s in m.config.get("preprocess") or []):
        return []
    return common_preprocess(members)


def input_shape_of(store: RunStore, members_models) -> tuple[int, int, int]:
    """The fused model's input: the run's image shape (run.json), else the first member's."""
    shape = store.image_shape()
    if shape is not None:
        return shape
    return tuple(int(s) for s in members_models[0].input_shape[1:])


def _member_output(image, i: int, model, layers: list, shape):
    """``image`` -> the member's in-model preprocessing layers -> its input size -> ``model``."""
    import keras

    x = image
    for j, layer in enumerate(layers):  # the member's preprocessing, on the raw run-size pictures
        layer.name = f"member{i}_{layer.name}" + (f"_{j}" if j else "")
        x = layer(x)
    want = model_side(model)  # the size predict resizes to (benchmark.store.inference), as a layer
    if want is not None and want != tuple(shape[:2]):
        x = keras.layers.Resizing(*want, name=f"resize{i}")(x)
    return model(x)


def raw_pixel_model(model, steps: list[dict[str, Any]], shape):
    """``model`` behind its preprocessing ``steps`` as layers (every step must have one): the raw
    run-size pictures in, probabilities out, differentiable end to end."""
    import keras

    from benchmark.data.preprocess import in_model_layers

    image = keras.Input(shape=tuple(shape), name="image")
    return keras.Model(image, _member_output(image, 0, model, in_model_layers(steps), shape))


def _calibrated(x, temperature: float | None):
    """``x`` through the entry's temperature (``zoo.layers.TemperatureScaling``), if it has one."""
    if temperature is None:
        return x
    from ensembles.calibration import PROB_FLOOR
    from zoo.layers import TemperatureScaling

    return TemperatureScaling(temperature, PROB_FLOOR, name="temperature")(x)


def build_fused_model(store: RunStore, entry: Entry):
    """One Keras model computing ``entry``'s probabilities from raw uint8-range images: its
    members, their combination and, when the entry is calibrated, its temperature last (so the
    model returns what ``entry.probs("test")`` stores)."""
    import keras

    from benchmark.data.preprocess import in_model_layers

    members = ensemble_members(store, entry)
    temperature = entry.temperature  # a damaged calibration: one line naming the file
    models = [load_member_model(m) for m in members]
    inside = outside_preprocess(members) == []  # steps as layers, per member
    layers = [in_model_layers(m.config.get("preprocess") or []) if inside else [] for m in members]
    if len(members) == 1 and not entry.is_ensemble and not layers[0] and temperature is None:
        return models[0]
    shape = input_shape_of(store, models)
    image = keras.Input(shape=shape, name="image")
    outputs = []
    for i, (member, model) in enumerate(zip(members, models, strict=True)):
        model.name = f"member{i}_{member.id}"  # unique sub-model names: no clashes between members
        outputs.append(_member_output(image, i, model, layers[i], shape))
    num_classes = int(outputs[0].shape[-1])
    if len(members) == 1 and not entry.is_ensemble:  # one member behind its preprocessing layers
        x = _calibrated(outputs[0], temperature)
        return keras.Model(image, x, name=f"zoobench_{members[0].id}"[:60])
    x = outputs[0] if len(outputs) == 1 else keras.layers.Concatenate(name="member_probs")(outputs)
    if entry.config.get("method") == "stacking":
        stacker = load_stacker(entry)
        if stacker.stacker == "logistic":
            kernels = [(stacker.coef_.T, stacker.intercept_, "softmax")]
        else:
            kernels = [
                (w, b, "relu")
                for w, b in zip(stacker.coefs_[:-1], stacker.intercepts_[:-1], strict=True)
            ]
            kernels.append((stacker.coefs_[-1], stacker.intercepts_[-1], "softmax"))
        for j, (w, b, act) in enumerate(kernels):
            layer = keras.layers.Dense(
                w.shape[1], activation=act, trainable=False, name=f"stacker{j}"
            )
            x = layer(x)
            layer.set_weights([w.astype(np.float32), b.astype(np.float32)])
    else:
        weights = np.asarray(entry.config["weights"], dtype=np.float64)
        kernel = np.concatenate([w * np.eye(num_classes) for w in weights], axis=0)
        layer = keras.layers.Dense(
            num_classes, use_bias=False, trainable=False, name="weighted_average"
        )
        x = layer(x)
        layer.set_weights([kernel.astype(np.float32)])
    x = _calibrated(x, temperature)
    fused = keras.Model(image, x, name=f"zoobench_{entry.name}".replace(" ", "_")[:60])
    fused.trainable = False
    return fused


def write_best(store: RunStore, best: Entry | None, export: bool = True) -> dict[str, Any]:
    """Record which entry is best in ``ensembles/best/config.json`` and export its fused model.

    ``best/`` has no metrics.json on purpose: it is a pointer, not another leaderboard row. The
    model is exported only when every member has a saved model and all share one preprocessing
    list; otherwise ``model`` is null with the reason, and the predictor runs members one by one.
    """
    store.clear_best()
    if best is None:
        log.warning("ensembles: no successful member or ensemble; nothing to export")
        return {}
    is_member = not best.is_ensemble
    members = ensemble_members(store, best)
    info: dict[str, Any] = {
        "name": BEST_DIR,
        "kind": best.kind,
        "id": best.id,
        "display_name": best.name,
        "method": None if is_member else best.config.get("method"),
        "members": [m.id for m in members],
        "val_accuracy": best.metrics.get("val_accuracy"),
        "val_loss": best.metrics.get("val_loss"),
        "temperature": best.temperature,
        "preprocess": outside_preprocess(members),
        "model": None,
        "reason": "",
    }
    missing = [m.id for m in members if not m.model_path.is_file()]
    if not export:
        info["reason"] = "export_best is false"
    elif missing:
        info["reason"] = f"members without model.keras: {', '.join(missing)}"
    elif info["preprocess"] is None:
        info["reason"] = "members use different preprocessing; predict runs them one by one"
    else:
        try:
            info.update(store.save_best_model(build_fused_model(store, best)))
        except Exception as exc:  # noqa: BLE001 - the pointer (and the one-by-one predictor) stays
            info["reason"] = f"export failed: {short_error(exc)}"
            # one line here; the traceback in best/error.txt
            where = store.write_error(store.best_dir, exc)
            log.warning(
                "ensembles: exporting %s as one model failed: %s%s",
                best.name,
                short_error(exc),
                f" (traceback in {where})" if where else "",
            )
            log.debug("ensembles: exporting %s failed", best.name, exc_info=exc)
    if info["reason"]:
        log.info("ensembles: best (%s) not exported as one model: %s", best.name, info["reason"])
    info["exported_at"] = utc_now()
    store.write_best_pointer(info)
    return info
