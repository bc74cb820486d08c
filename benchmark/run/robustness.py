"""Robustness of every member and ensemble: generated corruptions, AdaBN on them, and FGSM.

    measure_run(store, profile.robustness_config, seed)    # the runner calls this after ensembles

For each finished member, on the ``[robustness]`` table's corrupted test images
(:mod:`benchmark.data.corruptions`, a seeded stratified subset of the test split, used only to report):

- accuracy on every (corruption, severity), and their mean (the leaderboard's
  ``corruption_accuracy``);
- with AdaBN (Li et al. 2016, "Revisiting Batch Normalization For Practical Domain Adaptation"):
  the member's BatchNormalization moving means and variances re-estimated on the unlabeled
  corrupted images of that (corruption, severity), everything else untouched, then the same
  accuracy (``corruption_accuracy_adabn``). The statistics are a true average over the batches:
  each BN layer normalises with its batch statistics while every other layer (dropout included)
  runs in inference mode, and the moving statistics become the count-weighted mean of the batch
  means and variances (exact when the images fit one batch of :data:`ADAPT_BATCH`). Frozen
  backbones' BN layers are re-estimated too. The member's own statistics are restored afterwards;
  a member without BN gets its unadapted numbers and a "no BN" note;
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

A second adaptation method that *trains* on unlabeled target data is not measured: DANN
(Ganin et al. 2016) needs the target images while each member trains, which would change every
member's definition and cost a second training; TENT-style entropy minimisation (Wang et al. 2021)
needs parameter gradients through the whole member per (corruption, severity) on every backend,
several times the cost of AdaBN's forward pass, which the 10% budget of the default profile does not
hold. AdaBN is the test-time adaptation measured here.

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
from benchmark.formatting import duration, percent
from benchmark.metrics import accuracy
from benchmark.store.inference import model_inputs
from benchmark.store.runstore import Entry, RunStore

log = logging.getLogger(__name__)

ADAPT_BATCH = 256  # images per forward pass while BN statistics are re-estimated
PREDICT_BATCH = 256
# FGSM's gradient keeps every activation of every member of a fused model: 100 images through
# Lite2 + Lite0 at 160 px with mirrors needed over 20 GB, so attack a few at a time
FGSM_BATCH = 16
CLEAN, ADABN_CLEAN = "clean", "adabn-clean"
RECORD = 3  # the record's layout: a change re-measures every stored entry
NO_BN = "no BN: AdaBN leaves it unchanged"

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
def _batch_statistics(layers: list) -> Iterator[None]:
    """While inside: each BN layer normalises with its batch statistics and folds them into its
    moving statistics as a running count-weighted mean; the rest of the model is untouched."""
    saved = [(bn.trainable, bn.momentum) for bn in layers]
    seen = [0] * len(layers)

    def patched(i: int, bn, call):
        def call_with_batch_stats(inputs, training=None, mask=None):
            n = int(inputs.shape[0])
            bn.momentum = seen[i] / (seen[i] + n)  # 0 on the first batch: the batch's own stats
            seen[i] += n
            return call(inputs, training=True, mask=mask)

        return call_with_batch_stats

    try:
        for i, bn in enumerate(layers):
            bn.trainable = True  # a frozen backbone's BN updates only when trainable
            bn.call = patched(i, bn, bn.call)
        yield
    finally:
        for bn, (trainable, momentum) in zip(layers, saved, strict=True):
            if "call" in vars(bn):
                del bn.call
            bn.trainable, bn.momentum = trainable, momentum


def adapt_bn(model, images: np.ndarray, batch_size: int = ADAPT_BATCH) -> int:
    """AdaBN in place: re-estimate ``model``'s BN moving statistics on ``images`` (unlabeled model
    inputs); nothing else changes. Returns the number of BN layers (0: nothing to adapt)."""
    layers = bn_layers(model)
    if layers and len(images):
        _adapt(model, layers, images, batch_size)
    return len(layers)


def _adapt(model, layers: list, images: np.ndarray, batch_size: int) -> np.ndarray:
    """Re-estimate ``layers``' statistics on ``images``; the outputs of that pass."""
    from keras import ops

    outputs = []
    with _batch_statistics(layers):
        for start in range(0, len(images), batch_size):
            batch = ops.convert_to_tensor(
                np.asarray(images[start : start + batch_size], np.float32)
            )
            outputs.append(ops.convert_to_numpy(model(batch, training=False)))
    return np.concatenate(outputs)


def adabn_probs(model, images: np.ndarray, batch_size: int = ADAPT_BATCH) -> np.ndarray:
    """``model``'s probabilities on ``images`` with AdaBN statistics from those same images; the
    model's own statistics are put back afterwards. When the images fit one batch, the adapting
    pass's outputs are those probabilities already (its batch statistics are the new moving ones)."""
    layers = bn_layers(model)
    if not layers:
        return predict(model, images)
    state = bn_state(model)
    try:
        outputs = _adapt(model, layers, images, batch_size)
        return outputs if len(images) <= batch_size else predict(model, images)
    finally:
        restore_bn(model, state)


def adabn_copy(model, images: np.ndarray, batch_size: int = ADAPT_BATCH):
    """A copy of ``model`` with AdaBN statistics from ``images``; ``model`` itself is untouched."""
    import keras

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    adapt_bn(copy, images, batch_size)
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
    combos = list(split.images)
    inputs = [model_inputs(split.images[c], steps, model) for c in combos]
    fgsm_in = [model_inputs(fgsm_x, steps, model)] if len(fgsm_y) else []
    n = len(split)
    # One prediction pass over the clean, every corrupted and the FGSM images: fewer set-ups.
    clean_x = model_inputs(split.clean, steps, model)
    out = _half(predict(model, np.concatenate([clean_x, *inputs, *fgsm_in])))
    probs = {CLEAN: out[:n]}
    n_bn = len(bn_layers(model)) if config["adabn"] else 0
    if config["adabn"]:  # AdaBN on the clean images too: what re-estimating alone changes
        probs[ADABN_CLEAN] = _half(adabn_probs(model, clean_x)) if n_bn else probs[CLEAN]
    table = []
    for i, ((name, severity), x) in enumerate(zip(combos, inputs, strict=True)):
        plain = probs[_key("plain", name, severity)] = out[(i + 1) * n : (i + 2) * n]
        row = {"corruption": name, "severity": severity, "accuracy": accuracy(plain, split.labels)}
        if config["adabn"]:
            adapted = _half(adabn_probs(model, x)) if n_bn else plain
            probs[_key("adabn", name, severity)] = adapted
            row["accuracy_adabn"] = accuracy(adapted, split.labels)
        table.append(row)
    summary = {
        "clean_accuracy": accuracy(probs[CLEAN], split.labels),
        "bn_layers": n_bn,
        "note": NO_BN if config["adabn"] and not n_bn else "",
    }
    if ADABN_CLEAN in probs:
        summary["clean_accuracy_adabn"] = accuracy(probs[ADABN_CLEAN], split.labels)
    if len(fgsm_y):
        from benchmark.data.preprocess import in_model_layers
        from ensembles.export import raw_pixel_model

        clean_fgsm = out[(len(combos) + 1) * n :]
        if steps and in_model_layers(steps) is not None:  # attacked through its steps, as layers
            attacked = raw_pixel_model(model, steps, fgsm_x.shape[1:])
            summary.update(_fgsm(attacked, fgsm_x.astype(np.float32), fgsm_y, config, clean_fgsm))
        else:
            summary.update(_fgsm(model, fgsm_in[0], fgsm_y, config, clean_fgsm))
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
        if all(ADABN_CLEAN in p for p in probs):
            summary["clean_accuracy_adabn"] = accuracy(
                combine([p[ADABN_CLEAN] for p in probs]), split.labels
            )
        for name, severity in split.images:
            row = {"corruption": name, "severity": severity}
            for mode, column in (("plain", "accuracy"), ("adabn", "accuracy_adabn")):
                key = _key(mode, name, severity)
                if all(key in p for p in probs):
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
    summary["corruption_accuracy_adabn"] = _summary(record["table"], "accuracy_adabn")
    summary["images"] = len(split)
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


def _line(entry: Entry, summary: Mapping[str, Any], seconds: float) -> str:
    parts = []
    if summary.get("corruption_accuracy") is not None:
        part = f"corrupted {percent(summary['corruption_accuracy'], 1)}"
        if summary.get("corruption_accuracy_adabn") is not None:
            part += f" (AdaBN {percent(summary['corruption_accuracy_adabn'], 1)})"
        parts.append(part)
    if summary.get("fgsm_accuracy") is not None:
        parts.append(
            f"FGSM@{summary['fgsm_epsilon']:g} {percent(summary['fgsm_accuracy'], 1)} "
            f"(clean {percent(summary['fgsm_clean_accuracy'], 1)})"
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
