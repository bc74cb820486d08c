"""What the zoo holds, as data: list rows (params, FLOPs) and per-model details for people and the CLI.

Numbers come from building each model (nothing is typed in), so they always match the code. The
list rows are remembered in the zoo index (``zoo.index``: a JSON file in the cache folder, keyed by
the zoobench, Keras and Keras Tuner versions, the zoo's source files and the installed plugins, and
per backend and number of classes), so a second ``catalog()`` builds nothing and imports no Keras.

A pretrained entry that cannot be built here (its weights are missing offline) is still listed,
with its numbers marked unavailable and the reason (such a row is not remembered). It may
offer ``extra["build_without_weights"]``, a callable with the builder's signature
``(hp, input_shape, num_classes) -> keras.Model`` that builds the same graph with random weights;
the catalog uses it when present, so counting never needs a download.
"""

from __future__ import annotations

import fnmatch
import gc
import logging
from collections import Counter
from typing import Any

from zoo.registry import ModelEntry, ZooError, get, list_models

log = logging.getLogger(__name__)


def _build_for_counting(entry: ModelEntry, input_size: int | None, num_classes: int):
    """(model, hp) built with defaults at the entry's own input size, weights not needed."""
    import keras_tuner

    size = int(input_size or entry.input_size)
    hp = keras_tuner.HyperParameters()
    without_weights = entry.extra.get("build_without_weights")
    if callable(without_weights):
        model = without_weights(hp, (size, size, 3), num_classes)
    else:
        model = entry.build(hp, input_shape=(size, size, 3), num_classes=num_classes)
    return model, hp


def _unavailable(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".strip()


def _processed_size(hp, size: int) -> int:
    """The side the default model really works at: a backbone whose space has an ``input_size``
    resizes its input inside the model, so its FLOPs are those of that size."""
    chosen = hp.values.get("input_size")
    return int(chosen) if isinstance(chosen, int) and chosen > 0 else size


def summary_row(
    name: str, *, input_size: int | None = None, num_classes: int = 10
) -> dict[str, Any]:
    """One ``zoo list`` row: name, kind, family, params, FLOPs per image, input size, note.

    ``input_size`` is the side the default model computes at (what its FLOPs are for): the entry's
    designed size, or its ``input_size`` hyperparameter's default where it resizes internally.
    """
    from zoo.flops import count_flops

    entry = get(name)
    size = int(input_size or entry.input_size)
    row: dict[str, Any] = {
        "name": entry.name,
        "kind": entry.kind,
        "family": entry.family,
        "params": None,
        "flops": None,
        "input_size": size,
        "note": "",
    }
    try:
        model, hp = _build_for_counting(entry, size, num_classes)
    except Exception as exc:  # one entry that cannot be built must not hide the rest of the zoo
        log.info("could not build %s to count it: %s", name, exc)
        row["note"] = f"unavailable ({_unavailable(exc)})"
        return row
    row["input_size"] = _processed_size(hp, size)
    try:
        row["params"] = int(model.count_params())
        row["flops"] = int(count_flops(model))
    except ValueError as exc:  # e.g. a backbone built with an unknown spatial size
        row["note"] = f"FLOPs unavailable ({exc})"
    finally:
        del model
        gc.collect()
    return row


def catalog(
    pattern: str | None = None,
    *,
    kind: str | None = None,
    family: str | None = None,
    num_classes: int = 10,
    cached: bool = True,
    refresh: bool = False,
) -> list[dict[str, Any]]:
    """Rows for every architecture matching the filters (see ``zoo.list_models``).

    ``cached``: reuse the rows the zoo index remembers and remember new ones (a row whose model
    could not be built is always recomputed); ``refresh``: rebuild the index and recount every row.
    """
    if not cached:
        names = list_models(pattern, kind=kind, family=family)
        if not names and family:
            _no_family(family, {get(n).family for n in list_models()})
        return [summary_row(name, num_classes=num_classes) for name in names]

    from zoo import index as zoo_index
    from zoo import registry

    body = zoo_index.load(refresh=refresh)
    indexed = body["models"]
    if registry._loaded:  # the live registry is the truth once loaded
        models = {n: zoo_index.describe(e) for n, e in registry._REGISTRY.items()}
    else:  # the index, plus whatever was registered at run time
        models = dict(indexed)
        models.update({n: zoo_index.describe(e) for n, e in registry._REGISTRY.items()})
    names = sorted(models)
    if pattern:
        names = fnmatch.filter(names, pattern)
    if kind:
        names = [n for n in names if models[n]["kind"] == kind]
    if family:
        names = [n for n in names if models[n]["family"] == family]
    if not names and family:
        _no_family(family, {m["family"] for m in models.values()})

    remembered = zoo_index.cached_rows(num_classes, body)
    rows, counted = [], []
    for name in names:
        row = remembered.get(name)
        if row is None or indexed.get(name) != models[name]:
            row = summary_row(name, num_classes=num_classes)
            counted.append(row)
        rows.append(dict(row))
    if counted:
        zoo_index.save_rows(num_classes, counted)
    return rows


def _no_family(family: str, families: set[str]) -> None:
    raise ZooError(f"no architecture in family {family!r}; families: {', '.join(sorted(families))}")


def search_space(hp) -> list[dict[str, Any]]:
    """The hyperparameters a build declared, with their defaults and ranges (from ``hp.space``)."""
    rows = []
    for p in hp.space:
        config = p.get_config()
        kind = type(p).__name__
        if "values" in config:
            domain = ", ".join(map(str, config["values"]))
        elif "min_value" in config:
            domain = f"{config['min_value']} .. {config['max_value']}"
            if config.get("step"):
                domain += f" step {config['step']}"
            if config.get("sampling") not in (None, "linear"):
                domain += f" ({config['sampling']})"
        elif kind == "Boolean":
            domain = "True, False"
        else:
            domain = str(config.get("value", ""))
        rows.append(
            {"name": p.name, "type": kind, "default": hp.values.get(p.name), "domain": domain}
        )
    return rows


def layer_table(model) -> list[dict[str, Any]]:
    """Every top-level layer: name, class, output shape, parameter count."""
    rows = []
    for layer in model.layers:
        try:
            shape = tuple(layer.output.shape)
        except (AttributeError, ValueError):
            shape = None
        rows.append(
            {
                "name": layer.name,
                "type": type(layer).__name__,
                "output_shape": list(shape) if shape is not None else None,
                "params": int(layer.count_params()),
            }
        )
    return rows


def weights_provenance(entry) -> dict[str, Any] | None:
    """Where a pretrained entry's weights come from and whether this machine has them (never
    downloads); None for an architecture trained from scratch."""
    source = entry.extra.get("weights_source")
    if not source:
        return None
    info: dict[str, Any] = {"source": source, "file": entry.extra.get("weights_file")}
    locate = entry.extra.get("weights_locate")
    if locate is not None:
        try:
            info.update(available=True, path=str(locate()))
        except Exception as exc:  # noqa: BLE001 - WeightsUnavailable and its kin: say why
            info.update(available=False, reason=str(exc))
    return info


def details(name: str, *, num_classes: int = 10) -> dict[str, Any]:
    """Everything ``zoo show`` prints: description, paper, search space with defaults, layers."""
    from zoo.flops import count_flops

    entry = get(name)
    info: dict[str, Any] = {
        "name": entry.name,
        "kind": entry.kind,
        "family": entry.family,
        "description": entry.description,
        "paper": entry.paper,
        "module": entry.module,
        "input_size": entry.input_size,
        "extra": {
            k: v for k, v in entry.extra.items() if not callable(v) and k != "weights_source"
        },
        "weights": weights_provenance(entry),
        "params": None,
        "flops": None,
        "search_space": [],
        "layer_types": {},
        "layers": [],
        "note": "",
    }
    try:
        model, hp = _build_for_counting(entry, None, num_classes)
    except Exception as exc:
        info["note"] = f"could not build here ({_unavailable(exc)})"
        return info
    info["params"] = int(model.count_params())
    info["default_input_size"] = _processed_size(hp, entry.input_size)
    try:
        info["flops"] = int(count_flops(model))
    except ValueError as exc:
        info["note"] = f"FLOPs unavailable ({exc})"
    info["search_space"] = search_space(hp)
    info["layers"] = layer_table(model)
    info["layer_types"] = dict(Counter(row["type"] for row in info["layers"]).most_common())
    del model
    gc.collect()
    return info
