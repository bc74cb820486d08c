"""A member's hyperparameters checked against its architecture's declared space, before training.

An architecture declares its space by calling ``hp.Int`` / ``Float`` / ``Choice`` / ``Boolean``
while it builds (``keras_tuner.HyperParameters``). Building it with the profile's values preset
fills ``hp.space``; :func:`check_member_hp` then refuses a name the architecture never declares (a
typo) and a value outside its range or choices, in one line naming the member, the key and what is
allowed. The plan (``zoobench run --plan`` and the start of every run) and the trainer call it.

A tuned member is checked on its fixed keys (``hp``): the searched ones come from the space itself.

Spaces are remembered, in this process and in ``$ZOOBENCH_CACHE/hp-spaces.json`` under the zoo
index's key (zoobench, Keras and Keras Tuner versions, a hash of the zoo's sources, the plugins), so
a plan whose costs are already calibrated builds nothing to check itself, and a model the plan's
probe builds is checked on that build (:func:`remember`). Otherwise the architecture is built once
to learn its space, a pretrained one without its ImageNet weights.
"""

from __future__ import annotations

import difflib
import json
import logging
from pathlib import Path
from typing import Any

from benchmark.errors import ZoobenchError

log = logging.getLogger(__name__)

SPACE_FILE = "hp-spaces.json"
MEMBER_PREFIX = "member:"  # a trained member as a backbone: it takes no architecture hp

_memo: dict[str, list[dict[str, Any]]] = {}


# ---- what a member is built with ---------------------------------------------------------------


def build_inputs(spec, input_shape) -> tuple[dict[str, Any], tuple[int, int, int]]:
    """The hp values and input shape ``spec``'s model is built with (the plan's probe and here).

    Scratch members take ``input_size`` as their input side; a pretrained backbone takes the data's
    pixels and resizes to hp's ``input_size`` inside.
    """
    values = dict(spec.hp)
    size = None
    if spec.strategy is None:
        size = spec.input_size
    elif spec.input_size:
        values["input_size"] = spec.input_size
    shape = (size, size, input_shape[2]) if size else tuple(input_shape)
    return values, tuple(int(s) for s in shape)  # type: ignore[return-value]


def space_key(architecture: str, values: dict[str, Any], shape, num_classes: int) -> str:
    return json.dumps(
        [architecture, values, list(shape), int(num_classes)], sort_keys=True, default=str
    )


def remember(key: str, hp) -> list[dict[str, Any]]:
    """Keep the space a build declared in ``hp`` under ``key``; return it as plain data."""
    space = describe(hp)
    _memo[key] = space
    _store(key, space)
    return space


def describe(hp) -> list[dict[str, Any]]:
    """``hp.space`` as JSON-able rows: ``{"name", "type": "Int"|"Float"|"Choice"|"Boolean"|"Fixed", ...}``."""
    rows = []
    for p in hp.space:
        config = p.get_config()
        row = {"name": p.name, "type": type(p).__name__}
        for field in ("min_value", "max_value", "values", "value"):
            if field in config:
                row[field] = config[field]
        rows.append(row)
    return rows


def declared_space(spec, input_shape, num_classes: int) -> tuple[list[dict[str, Any]] | None, bool]:
    """``(rows, complete)``: the space ``spec``'s architecture declares when built with its values,
    and whether the build finished (a build that failed, e.g. on a value out of range, declared
    only part of it). ``(None, True)`` when there is none to check against (a ``member:``
    backbone, an architecture the zoo does not know)."""
    if spec.architecture.startswith(MEMBER_PREFIX):
        return None, True
    values, shape = build_inputs(spec, input_shape)
    key = space_key(spec.architecture, values, shape, num_classes)
    if key in _memo:
        return _memo[key], True
    stored = _load().get(key)
    if stored is not None:
        _memo[key] = stored
        return stored, True
    import zoo
    from benchmark.tune.tuning import fixed_hyperparameters
    from zoo.registry import ZooError

    try:
        entry = zoo.get(spec.architecture)
    except ZooError:
        return None, True  # the plan says so on the member's line
    hp = fixed_hyperparameters(values)
    try:
        if entry.kind == "pretrained":  # its space, not its ImageNet weights
            with zoo.no_pretrained_weights():
                entry.build(hp, input_shape=shape, num_classes=num_classes)
        else:
            entry.build(hp, input_shape=shape, num_classes=num_classes)
    except Exception as exc:  # noqa: BLE001 - a model that does not build is the plan's note
        log.info("could not build %s to check its hp: %s", spec.architecture, exc)
        return describe(hp), False  # what it declared before failing; not remembered
    finally:
        import keras

        keras.backend.clear_session()
    return remember(key, hp), True


# ---- the check ---------------------------------------------------------------------------------


def check_member_hp(spec, space, complete: bool = True) -> None:
    """Refuse ``spec.hp`` keys ``space`` does not declare, and values outside it (ZoobenchError).

    ``space`` is a built ``HyperParameters`` or :func:`describe`'s rows; None checks nothing. An
    incomplete space (its build failed part way) checks the values it has, never unknown names.
    """
    if space is None or not spec.hp:
        return
    rows = space if isinstance(space, list) else describe(space)
    params = {row["name"]: row for row in rows}
    arch = spec.architecture
    unknown = sorted(set(spec.hp) - set(params))
    if unknown and complete:
        key = unknown[0]
        close = difflib.get_close_matches(key, list(params), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ZoobenchError(
            f"member {spec.name!r}: hp {key!r}: {arch} has no such hyperparameter{hint} "
            f"(it has: {', '.join(sorted(params)) or 'none'})"
        )
    for key, value in spec.hp.items():
        allowed = _allowed(params[key], value) if key in params else ""
        if allowed:
            raise ZoobenchError(
                f"member {spec.name!r}: hp {key} = {_show(value)} is not allowed: "
                f"{arch}'s {key} is {allowed}"
            )


def check_spec(spec, input_shape, num_classes: int) -> None:
    """:func:`check_member_hp` against the space ``spec``'s architecture declares."""
    check_member_hp(spec, *declared_space(spec, input_shape, num_classes))


def _allowed(param: dict[str, Any], value: Any) -> str:
    """What ``param`` allows when ``value`` does not fit it; "" when it fits."""
    kind = param["type"]
    if kind == "Boolean":
        return "" if isinstance(value, bool) else "true or false"
    if kind == "Fixed":
        return "" if _same(value, param.get("value")) else f"fixed at {_show(param.get('value'))}"
    if kind == "Choice":
        choices = list(param.get("values") or [])
        if any(_same(value, c) for c in choices):
            return ""
        if choices and all(_number(c) for c in choices) and _number(value):
            # A numeric choice is the search's grid, not the only sizes that build (a width of
            # 0.25 is a fine tiny net): any number of the same sign as the grid is allowed.
            if value > 0 if min(choices) > 0 else value >= 0 if min(choices) >= 0 else True:
                return ""
            sign = "a positive number" if min(choices) > 0 else "a number >= 0"
            return f"{sign} (the search's grid: {', '.join(_show(c) for c in choices)})"
        return f"one of {', '.join(_show(c) for c in choices)}"
    if kind in ("Int", "Float"):
        lo, hi = param.get("min_value"), param.get("max_value")
        what = "an integer" if kind == "Int" else "a number"
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if kind == "Int" and isinstance(value, float):
            number = value.is_integer()
        if number and (lo is None or value >= lo) and (hi is None or value <= hi):
            return ""
        return f"{what} from {_show(lo)} to {_show(hi)}"
    return ""  # a kind of hyperparameter this check does not know: Keras Tuner's to judge


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return a == b


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


# ---- the cache file ----------------------------------------------------------------------------


def _path() -> Path:
    from zoo.index import cache_root

    return cache_root() / SPACE_FILE


_key_memo: list[dict[str, Any]] = []


def _cache_key() -> dict[str, Any]:
    if not _key_memo:
        from zoo.index import cache_key

        _key_memo.append(cache_key())
    return _key_memo[0]


def _load() -> dict[str, list[dict[str, Any]]]:
    """The file's spaces when it was written under this zoo's key; {} otherwise (never trusted)."""
    path = _path()
    try:
        body = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError):
        return {}
    if not isinstance(body, dict) or body.get("key") != _cache_key():
        return {}
    spaces = body.get("spaces")
    if not isinstance(spaces, dict):
        return {}
    return {
        k: v
        for k, v in spaces.items()
        if isinstance(v, list)
        and all(
            isinstance(r, dict)
            and isinstance(r.get("name"), str)
            and isinstance(r.get("type"), str)
            for r in v
        )
    }


def _store(key: str, space: list[dict[str, Any]]) -> None:
    from benchmark import atomic

    spaces = _load()
    spaces[key] = space
    try:
        atomic.write_json(_path(), {"key": _cache_key(), "spaces": spaces})
    except (OSError, TypeError) as exc:  # a read-only cache costs a build next time, no more
        log.info("could not store hp spaces in %s: %s", _path(), exc)


def clear_memo() -> None:
    """Forget the spaces this process remembered (tests)."""
    _memo.clear()
    _key_memo.clear()
