"""Robustness of every member and ensemble: generated corruptions, AdaBN on them, and FGSM.

    measure_run(store, profile.robustness_config, seed)    # the runner calls this after ensembles

For each finished member, on the ``[robustness]`` table's corrupted test images
(:mod:`benchmark.data.corruptions`, a seeded stratified subset of the test split, used only to report):

- accuracy on every (corruption, severity), and their mean (the leaderboard's
  ``corruption_accuracy``);
- with AdaBN (Li et al. 2016, "Revisiting Batch Normalization For Practical Domain Adaptation"):
  the member's BatchNormalization moving means and variances set to those of the whole unlabeled
  corrupted set of that (corruption, severity), everything else untouched, then the same accuracy
  (``corruption_accuracy_adabn``). The set passes in even batches of at least :data:`ADAPT_MIN`
  images (the published protocol's 200; a smaller set is one batch, and flagged indicative);
  each BN layer normalises its input with the batch's statistics while every
  other layer (dropout included) runs in inference mode, and its new statistics are the exact mean
  and variance of its input over all batches. Frozen backbones' BN layers are re-estimated too.
  The member's own statistics are restored afterwards; a member without BN gets its unadapted
  numbers and a "no BN" note;
- with TENT (``tent = true``; Wang et al. 2021, DequanWang/tent): batches of 200 or more (as
  AdaBN's) normalised by their
  own statistics, one Adam step (learning rate 0.001) on the BN scales and shifts per batch
  against the prediction entropy, reset for every (corruption, severity)
  (``corruption_accuracy_tent``); TensorFlow backend only, other backends are refused in one line;
- a 95% Wilson interval beside every accuracy (``*_low``, ``*_high``), on the number of images it
  was measured on; a mean over (corruption, severity) cells gets the interval of one proportion on
  those images, which is conservative;
- FGSM accuracy (Goodfellow et al. 2015) at ``fgsm_epsilon`` pixels of the raw 0-255 input on the
  first ``fgsm_images`` of the same seeded subset of clean test images (the gradient code of
  :mod:`benchmark.train.adversarial`, which FGSM adversarial training uses), beside the clean accuracy on
  those images. A member whose preprocessing steps run as layers (``deblock``) is attacked on the
  raw pictures through them; one with OpenCV steps (not differentiable) at the input of its Keras
  model, after the steps.

Ensembles combine their members' stored corrupted probabilities with their own weights or stacker
(no member is run twice); their FGSM accuracy is measured through the fused model
(:func:`ensembles.export.build_fused_model`), which holds each member's layer steps, or needs one
OpenCV preprocessing list for all members.

DANN (Ganin et al. 2016), which trains on unlabeled target data, is not measured: it needs the
target images while each member trains, which would change every member's definition and cost a
second training.

Results go into each entry's folder through :class:`benchmark.store.runstore.RunStore`
(``write_robustness``: the float16 probabilities, then the record with its config hash, each
written atomically). A rerun skips an entry whose record has the same hash, so a run killed half-way
resumes with what is missing and nothing torn; ensembles are rebuilt each run and measured again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np

from benchmark.data.corruptions import PARAMETERS, VERSION, CorruptedSplit, corrupted_split, pick
from benchmark.errors import ZoobenchError, short_error
from benchmark.formatting import duration
from benchmark.metrics import accuracy, wilson_interval
from benchmark.store.inference import model_inputs
from benchmark.store.runstore import Entry, RunStore

log = logging.getLogger(__name__)

ADAPT_MIN = 200  # the published protocol's batch (TENT, Wang et al. 2021): fewer is indicative
PREDICT_BATCH = 256
# FGSM's gradient keeps every activation of every member of a fused model: 100 images through
# Lite2 + Lite0 at 160 px with mirrors needed over 20 GB, so attack a few at a time
FGSM_BATCH = 16
CLEAN = "clean"
ADAPTATIONS = ("adabn", "tent")  # the [robustness] switches, in the order they are measured
RECORD = 4  # the record's layout: a change re-measures every stored entry
NO_BN = "no BN: adaptation leaves it unchanged"

Progress = Callable[[str], None]


# ---- BatchNormalization statistics -----------------------------------------------------------------
def bn_layers(model) -> list:
    """Every BatchNormalization layer of ``model``, nested models (a backbone) included."""
    import keras

    return [
        layer
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]


def bn_state(model) -> list[tuple[np.ndarray, np.ndarray]]:
    """A copy of every BN layer's (moving mean, moving variance), in :func:`bn_layers` order."""
    from keras import ops

    return [
        (ops.convert_to_numpy(bn.moving_mean), ops.convert_to_numpy(bn.moving_variance))
        for bn in bn_layers(model)
    ]


def restore_bn(model, state: list[tuple[np.ndarray, np.ndarray]]) -> None:
    """Put back the statistics :func:`bn_state` copied."""
    for bn, (mean, variance) in zip(bn_layers(model), state, strict=True):
        bn.moving_mean.assign(mean)
        bn.moving_variance.assign(variance)


@contextmanager
def _batch_statistics(layers: list) -> Iterator[list[list[float | np.ndarray]]]:
    """While inside: each BN layer normalises with its batch statistics (trainable, so a frozen
    backbone's too) and adds the batch's count, sum and sum of squares per channel to the totals
    it yields, [n, sum, sum of squares] per layer; the rest of the model is untouched."""
    from keras import ops

    saved = [bn.trainable for bn in layers]
    totals: list[list[float | np.ndarray]] = [[0, 0.0, 0.0] for _ in layers]

    def patched(i: int, bn, call):
        def call_with_batch_stats(inputs, training=None, mask=None):
            axis = bn.axis % len(inputs.shape)
            reduce = [a for a in range(len(inputs.shape)) if a != axis]
            mean, variance = ops.moments(ops.cast(inputs, "float32"), axes=reduce)
            mean = ops.convert_to_numpy(mean).astype(np.float64)
            variance = ops.convert_to_numpy(variance).astype(np.float64)
            n = int(np.prod([int(inputs.shape[a]) for a in reduce]))
            totals[i][0] += n
            totals[i][1] = totals[i][1] + n * mean
            totals[i][2] = totals[i][2] + n * (variance + np.square(mean))
            return call(inputs, training=True, mask=mask)

        return call_with_batch_stats

    try:
        for i, bn in enumerate(layers):
            bn.trainable = (
                True  # a frozen backbone's BN normalises by its batch only when trainable
            )
            bn.call = patched(i, bn, bn.call)
        yield totals
    finally:
        for bn, trainable in zip(layers, saved, strict=True):
            if "call" in vars(bn):
                del bn.call
            bn.trainable = trainable


def adapt_batches(count: int, least: int = ADAPT_MIN) -> list[slice]:
    """``count`` images cut into the most batches of at least ``least`` images, as even as can be
    (so each holds fewer than twice ``least``): 1,100 images are five batches of 220, 300 one of
    300. The published protocol (TENT's, Wang et al. 2021) adapts on batches of 200."""
    if count <= 0:
        return []
    parts = max(1, count // max(1, least))
    edges = np.linspace(0, count, parts + 1).round().astype(int)
    return [slice(int(a), int(b)) for a, b in zip(edges, edges[1:], strict=False)]


def adapt_bn(model, images: np.ndarray, least: int = ADAPT_MIN) -> int:
    """AdaBN in place: re-estimate ``model``'s BN moving statistics on ``images`` (unlabeled model
    inputs); nothing else changes. Returns the number of BN layers (0: nothing to adapt)."""
    layers = bn_layers(model)
    if layers and len(images):
        _adapt(model, layers, images, least)
    return len(layers)


def _adapt(model, layers: list, images: np.ndarray, least: int) -> np.ndarray:
    """Set ``layers``' moving statistics to the mean and variance of their inputs over all of
    ``images`` (AdaBN, Li et al. 2016: the whole target set; each layer sees its input normalised
    batch by batch, batches of :func:`adapt_batches`); the outputs of that pass."""
    from keras import ops

    outputs = []
    with _batch_statistics(layers) as totals:
        for part in adapt_batches(len(images), least):
            batch = ops.convert_to_tensor(np.asarray(images[part], np.float32))
            outputs.append(ops.convert_to_numpy(model(batch, training=False)))
    for bn, (n, total, squares) in zip(layers, totals, strict=True):
        if not n:  # a layer the images never reached (a branch not taken)
            continue
        mean = np.asarray(total) / n
        variance = np.maximum(np.asarray(squares) / n - np.square(mean), 0.0)
        bn.moving_mean.assign(mean.astype(np.float32))
        bn.moving_variance.assign(variance.astype(np.float32))
    return np.concatenate(outputs)


def adabn_probs(model, images: np.ndarray, least: int = ADAPT_MIN) -> np.ndarray:
    """``model``'s probabilities on ``images`` with AdaBN statistics from those same images; the
    model's own statistics are put back afterwards. When the images pass as one batch, the adapting
    pass's outputs are those probabilities already (its batch statistics are the new moving ones)."""
    layers = bn_layers(model)
    if not layers:
        return predict(model, images)
    state = bn_state(model)
    try:
        outputs = _adapt(model, layers, images, least)
        return outputs if len(adapt_batches(len(images), least)) <= 1 else predict(model, images)
    finally:
        restore_bn(model, state)


# ---- TENT (Wang et al. 2021, DequanWang/tent) ---------------------------------------------------------
TENT_BATCH = 200  # its CIFAR-10-C configuration (cfgs/tent.yaml): batches of 200,
TENT_LR = 1e-3  # Adam, learning rate 0.001, beta 0.9, no weight decay, one step a batch
TENT_BACKENDS = ("tensorflow",)


def check_tent_backend() -> None:
    """One line naming the problem when TENT cannot run on this Keras backend."""
    import keras

    backend = keras.backend.backend()
    if backend not in TENT_BACKENDS:
        raise ZoobenchError(
            f"[robustness] tent = true needs the TensorFlow backend (its gradient step is "
            f"written with tf.GradientTape); this run uses {backend}: set tent = false"
        )


def tent_probs(
    model, images: np.ndarray, least: int = TENT_BATCH, learning_rate: float = TENT_LR
) -> np.ndarray:
    """``model``'s probabilities on ``images`` under TENT: batch by batch, every BN layer normalises
    with the batch's statistics, the prediction is taken, then one Adam step on the BN scales and
    shifts lowers the batch's mean prediction entropy; the next batch sees the updated model
    (online, as ``tent.Tent`` with steps=1). Everything is reset afterwards, so each call (one
    corruption and severity) starts from the member as trained. TensorFlow backend only."""
    import keras
    import tensorflow as tf
    from keras import ops

    check_tent_backend()
    layers = bn_layers(model)
    if not layers or not len(images):
        return predict(model, images)
    state = bn_state(model)
    outputs = []
    with _batch_statistics(layers):  # batch statistics always, as tent.configure_model sets
        params = [v for bn in layers for v in (bn.gamma, bn.beta) if v is not None]
        saved = [ops.convert_to_numpy(v) for v in params]
        optimizer = keras.optimizers.Adam(learning_rate, beta_1=0.9, beta_2=0.999)
        try:
            for part in adapt_batches(len(images), least):
                x = tf.convert_to_tensor(np.asarray(images[part], np.float32))
                with tf.GradientTape() as tape:
                    tape.watch([v.value for v in params])
                    probs = model(x, training=False)
                    p = tf.clip_by_value(tf.cast(probs, tf.float32), 1e-12, 1.0)
                    loss = -tf.reduce_mean(tf.reduce_sum(p * tf.math.log(p), axis=-1))
                grads = tape.gradient(loss, [v.value for v in params])
                optimizer.apply_gradients(
                    [(g, v) for g, v in zip(grads, params, strict=True) if g is not None]
                )
                outputs.append(probs.numpy())
        finally:
            for v, value in zip(params, saved, strict=True):
                v.assign(value)
            restore_bn(model, state)
    return np.concatenate(outputs)


def adabn_copy(model, images: np.ndarray, least: int = ADAPT_MIN):
    """A copy of ``model`` with AdaBN statistics from ``images``; ``model`` itself is untouched."""
    import keras

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    adapt_bn(copy, images, least)
    return copy


def predict(model, images: np.ndarray, batch_size: int = PREDICT_BATCH) -> np.ndarray:
    """Class probabilities of ``images`` (model inputs, any dtype) in inference mode, by the one
    inference path (:func:`benchmark.store.inference.probabilities`: bounded memory)."""
    from benchmark.store.inference import probabilities

    return probabilities(model, images, batch_size)


def fgsm_probs(
    model, images: np.ndarray, labels: np.ndarray, epsilon: float, batch_size: int = FGSM_BATCH
) -> np.ndarray:
    """Probabilities on FGSM images: one signed-gradient step of ``epsilon`` (pixels of the model's
    0-255 input) up the cross-entropy of the true ``labels``, clipped to valid pixels."""
    import keras

    from benchmark.train.adversarial import fgsm_examples

    if epsilon <= 0:
        return predict(model, images)
    attacked = np.empty(images.shape, np.float32)
    for start in range(0, len(images), batch_size):
        x = np.asarray(images[start : start + batch_size], np.float32)
        y = np.asarray(labels[start : start + batch_size], np.int64)
        attacked[start : start + len(x)] = keras.ops.convert_to_numpy(
            fgsm_examples(model, keras.losses.sparse_categorical_crossentropy, x, y, float(epsilon))
        )
    return predict(model, attacked)


# ---- one run -------------------------------------------------------------------------------------
def config_hash(config: Mapping[str, Any], seed: int, split_key: str, what: Any) -> str:
    """What a stored record was measured with: the settings, the images and the entry itself."""
    text = json.dumps(
        {
            "version": [VERSION, RECORD],
            "config": dict(config),
            "seed": int(seed),
            "split": split_key,
            "entry": what,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _key(mode: str, name: str, severity: int) -> str:
    return f"{mode}-{name}-{severity}"


def _summary(table: list[dict[str, Any]], key: str) -> float | None:
    values = [row[key] for row in table if row.get(key) is not None]
    return float(np.mean(values)) if values else None


def adaptations(config: Mapping[str, Any]) -> list[str]:
    """The test-time adaptations ``config`` asks for, of :data:`ADAPTATIONS`."""
    return [mode for mode in ADAPTATIONS if config.get(mode)]


def add_intervals(record: dict[str, Any]) -> None:
    """A 95% Wilson interval (``*_low``, ``*_high``) beside every accuracy of ``record``: a table
    cell's and a clean figure's on the ``images`` pictures, a mean over the table's cells on the
    same count (conservative: see :func:`benchmark.metrics.wilson_interval`), FGSM's on
    ``fgsm_images``."""
    summary = record["summary"]
    n = int(summary.get("images") or 0)
    for key in [k for k in summary if k.startswith(("clean_accuracy", "corruption_accuracy"))]:
        if not key.endswith(("_low", "_high")) and summary[key] is not None:
            summary[f"{key}_low"], summary[f"{key}_high"] = wilson_interval(summary[key], n)
    for key in ("fgsm_accuracy", "fgsm_clean_accuracy"):
        if summary.get(key) is not None:
            fgsm_n = int(summary.get("fgsm_images") or 0)
            summary[f"{key}_low"], summary[f"{key}_high"] = wilson_interval(summary[key], fgsm_n)
    for row in record["table"]:
        for key in [
            k for k in row if k.startswith("accuracy") and not k.endswith(("_low", "_high"))
        ]:
            row[f"{key}_low"], row[f"{key}_high"] = wilson_interval(row[key], n)


def _member_record(
    entry: Entry,
    split: CorruptedSplit,
    config: Mapping[str, Any],
    fgsm_x: np.ndarray,
    fgsm_y: np.ndarray,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    from ensembles.export import load_member_model

    model = load_member_model(entry)
    steps = list(entry.config.get("preprocess") or [])
    # One (corruption, severity) at a time in the model's input size: 75 cells of 1,100 images
    # at 160 px would be 6 GB at once.
    clean_x = model_inputs(split.clean, steps, model)
    probs = {CLEAN: _half(predict(model, clean_x))}
    modes = adaptations(config)
    n_bn = len(bn_layers(model)) if modes else 0
    adapted_probs = {"adabn": adabn_probs, "tent": tent_probs}
    for mode in modes:  # on the clean images too: what adapting alone changes
        probs[f"{mode}-{CLEAN}"] = (
            _half(adapted_probs[mode](model, clean_x)) if n_bn else probs[CLEAN]
        )
    table = []
    for name, severity in split.images:
        x = model_inputs(split.images[name, severity], steps, model)
        plain = probs[_key("plain", name, severity)] = _half(predict(model, x))
        row = {"corruption": name, "severity": severity, "accuracy": accuracy(plain, split.labels)}
        for mode in modes:
            adapted = _half(adapted_probs[mode](model, x)) if n_bn else plain
            probs[_key(mode, name, severity)] = adapted
            row[f"accuracy_{mode}"] = accuracy(adapted, split.labels)
        table.append(row)
    summary = {
        "clean_accuracy": accuracy(probs[CLEAN], split.labels),
        "bn_layers": n_bn,
        "note": NO_BN if modes and not n_bn else "",
    }
    for mode in modes:
        summary[f"clean_accuracy_{mode}"] = accuracy(probs[f"{mode}-{CLEAN}"], split.labels)
    if len(fgsm_y):
        from benchmark.data.preprocess import in_model_layers
        from ensembles.export import raw_pixel_model

        fgsm_in = model_inputs(fgsm_x, steps, model)
        clean_fgsm = _half(predict(model, fgsm_in))
        if steps and in_model_layers(steps) is not None:  # attacked through its steps, as layers
            attacked = raw_pixel_model(model, steps, fgsm_x.shape[1:])
            summary.update(_fgsm(attacked, fgsm_x.astype(np.float32), fgsm_y, config, clean_fgsm))
        else:
            summary.update(_fgsm(model, fgsm_in, fgsm_y, config, clean_fgsm))
            if steps:
                summary["fgsm_note"] = "attacked after its preprocessing steps"
    return {"summary": summary, "table": table}, probs


def _half(probs: np.ndarray) -> np.ndarray:
    """``probs`` rounded as they are stored (float16): a rerun's ensembles combine the same."""
    return probs.astype(np.float16).astype(np.float32)


def _fgsm(
    model, x: np.ndarray, y: np.ndarray, config: Mapping[str, Any], clean: np.ndarray | None = None
) -> dict[str, Any]:
    attacked = fgsm_probs(model, x, y, config["fgsm_epsilon"])
    clean = predict(model, x) if clean is None else clean
    return {
        "fgsm_accuracy": accuracy(attacked, y),
        "fgsm_clean_accuracy": accuracy(clean, y),
        "fgsm_epsilon": float(config["fgsm_epsilon"]),
        "fgsm_images": len(y),
    }


def _ensemble_record(
    store: RunStore,
    entry: Entry,
    split: CorruptedSplit,
    config: Mapping[str, Any],
    member_probs: dict[str, dict[str, np.ndarray]],
    fgsm_x: np.ndarray,
    fgsm_y: np.ndarray,
) -> tuple[dict[str, Any], list[str]]:
    notes = []
    ids = list(entry.config.get("members") or [])
    summary: dict[str, Any] = {}
    table: list[dict[str, Any]] = []
    if ids and all(CLEAN in member_probs.get(mid, {}) for mid in ids):
        probs = [member_probs[mid] for mid in ids]
        from ensembles.predictor import combiner

        combine = combiner(entry, int(probs[0][CLEAN].shape[1]))
        summary["clean_accuracy"] = accuracy(combine([p[CLEAN] for p in probs]), split.labels)
        for mode in adaptations(config):
            key = f"{mode}-{CLEAN}"
            if all(key in p for p in probs):
                summary[f"clean_accuracy_{mode}"] = accuracy(
                    combine([p[key] for p in probs]), split.labels
                )
        for name, severity in split.images:
            row = {"corruption": name, "severity": severity}
            for mode in ("plain", *adaptations(config)):
                key = _key(mode, name, severity)
                if all(key in p for p in probs):
                    column = "accuracy" if mode == "plain" else f"accuracy_{mode}"
                    row[column] = accuracy(combine([p[key] for p in probs]), split.labels)
            table.append(row)
    else:
        notes.append("members without corrupted predictions: no corruption accuracy")
    if len(fgsm_y):
        from ensembles.export import build_fused_model, ensemble_members, outside_preprocess

        steps = outside_preprocess(ensemble_members(store, entry))
        if steps is None:
            notes.append("members use different preprocessing: no fused model to attack")
        else:
            model = build_fused_model(store, entry)
            summary.update(_fgsm(model, model_inputs(fgsm_x, steps, model), fgsm_y, config))
    summary["note"] = "; ".join(notes)
    return {"summary": summary, "table": table}, notes


def _finish_record(
    record: dict[str, Any],
    digest: str,
    split: CorruptedSplit,
    seconds: float,
    config: Mapping[str, Any],
) -> dict[str, Any]:
    summary = record["summary"]
    summary["corruption_accuracy"] = _summary(record["table"], "accuracy")
    for mode in adaptations(config):
        summary[f"corruption_accuracy_{mode}"] = _summary(record["table"], f"accuracy_{mode}")
    summary["images"] = len(split)
    if adaptations(config):
        sizes = [p.stop - p.start for p in adapt_batches(len(split), ADAPT_MIN)]
        summary["adapt_batches"] = [min(sizes), max(sizes)] if sizes else [0, 0]
        if len(split) < ADAPT_MIN:
            summary["adapt_note"] = (
                f"adapted on {len(split)} images, fewer than the protocol's {ADAPT_MIN}: indicative"
            )
    add_intervals(record)
    return {
        **record,
        "config_hash": digest,
        "config": dict(config),
        "split": split.key,
        "indices": split.indices.tolist(),
        "seconds": round(seconds, 2),
        "parameters": {
            n: {
                "parameter": PARAMETERS[n][0],
                "values": {str(s): PARAMETERS[n][1][s - 1] for s in config["severities"]},
            }
            for n in config["corruptions"]
        },
    }


def with_interval(summary: Mapping[str, Any], key: str) -> str:
    """``summary[key]`` as the leaderboard shows it: in percent with its 95% interval, "~" in front
    when the interval is wider than +-5 points (``reports.leaderboard.robustness_cell``)."""
    from reports.leaderboard import robustness_cell

    return robustness_cell(summary.get(key), summary.get(f"{key}_low"), summary.get(f"{key}_high"))


def _line(entry: Entry, summary: Mapping[str, Any], seconds: float) -> str:
    parts = []
    if summary.get("corruption_accuracy") is not None:
        part = f"corrupted {with_interval(summary, 'corruption_accuracy')}"
        for mode, label in (("adabn", "AdaBN"), ("tent", "TENT")):
            if summary.get(f"corruption_accuracy_{mode}") is not None:
                part += f", {label} {with_interval(summary, f'corruption_accuracy_{mode}')}"
        parts.append(part)
    if summary.get("fgsm_accuracy") is not None:
        parts.append(
            f"FGSM@{summary['fgsm_epsilon']:g} {with_interval(summary, 'fgsm_accuracy')} "
            f"(clean {with_interval(summary, 'fgsm_clean_accuracy')})"
        )
    if summary.get("note"):
        parts.append(summary["note"])
    return (
        f"robustness: {entry.name}: {', '.join(parts) or 'nothing measured'} [{duration(seconds)}]"
    )


def measure_run(
    store: RunStore,
    config: Mapping[str, Any],
    seed: int = 0,
    *,
    progress: Progress | None = None,
    expired: Callable[[], bool] | None = None,
) -> int:
    """Measure every finished member, then every ensemble, that has no current record.

    ``config`` is the resolved ``[robustness]`` table without ``enabled``. ``expired`` (the run's
    budget) is asked before each entry: once true the rest is left for a rerun. Returns how many
    entries were measured now. A member that fails is a progress line, and the rest go on.
    """
    progress = progress or (lambda line: log.info("%s", line))
    expired = expired or (lambda: False)
    if config.get("tent"):
        check_tent_backend()
    x_test, y_test = store.load_array("x_test"), store.labels("test")
    split = corrupted_split(x_test, y_test, config, seed)
    fgsm_idx = pick(y_test, int(config["fgsm_images"]), seed) if config["fgsm_images"] else []
    fgsm_x, fgsm_y = x_test[fgsm_idx], y_test[fgsm_idx]
    measured = 0
    member_probs: dict[str, dict[str, np.ndarray]] = {}
    member_hashes: dict[str, str] = {}
    members = [m for m in store.members(notes=[]) if m.ok and m.model_path.is_file()]
    ensembles = [e for e in store.ensembles(notes=[]) if e.ok]
    for entry in [*members, *ensembles]:
        if entry.is_ensemble:
            what: Any = {
                "config": entry.config,
                "members": [member_hashes.get(mid) for mid in entry.config["members"]],
            }
        else:
            what = {"id": entry.id, "files": entry.metrics.get("files")}
        digest = config_hash(config, seed, split.key, what)
        previous = entry.robustness()
        if previous and previous.get("config_hash") == digest:
            if entry.is_ensemble:
                continue
            stored = entry.robustness_probs()
            if CLEAN in stored:  # else the probabilities were lost: measure the member again
                member_probs[entry.id], member_hashes[entry.id] = stored, digest
                continue
        if expired():
            progress("robustness: budget reached; the rest is measured by a rerun")
            break
        start = time.monotonic()
        try:
            if entry.is_ensemble:
                record, _ = _ensemble_record(
                    store, entry, split, config, member_probs, fgsm_x, fgsm_y
                )
                probs = None
            else:
                record, probs = _member_record(entry, split, config, fgsm_x, fgsm_y)
        except ZoobenchError as exc:
            progress(f"robustness: {entry.name}: skipped ({exc})")
            continue
        except Exception as exc:  # noqa: BLE001 - one model's failure must not cost the others
            log.debug("robustness of %s failed", entry.name, exc_info=exc)
            progress(f"robustness: {entry.name}: FAILED ({short_error(exc)})")
            continue
        seconds = time.monotonic() - start
        record = _finish_record(record, digest, split, seconds, config)
        store.write_robustness(entry, record, probs)
        if probs is not None:
            member_probs[entry.id], member_hashes[entry.id] = probs, digest
        measured += 1
        progress(_line(entry, record["summary"], seconds))
    return measured
