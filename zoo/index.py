"""The zoo's index, cached on disk: names, kinds and metadata (and ``zoo list`` rows) without Keras.

Learning an architecture's kind from the registry imports every zoo module, hence Keras and its
backend (seconds, and impossible where TensorFlow cannot be imported); counting its params and
FLOPs builds it (``zoobench zoo list`` builds them all). This module keeps what those give as JSON in
the cache folder (``$ZOOBENCH_CACHE/zoo-index.json``, default ``~/.cache/zoobench``, the folder
``zoo.weights`` uses), so a profile check or a second ``zoo list`` reads a file instead.

The file is trusted only when its key matches this process exactly: the file format, the zoobench,
Keras and Keras Tuner versions (``importlib.metadata``, nothing imported), a SHA-256 of every
``zoo/**/*.py`` file, and the installed ``zoobench.models`` entry points (name, value, distribution
and version, none loaded); a digest of its content guards against damage. Anything else (missing,
unreadable, corrupt, another key) is ignored and rebuilt from the live registry, never trusted.
It is written atomically (a temp file beside it, then ``os.replace``). A zoo in which a plugin
failed to load is used in memory but not written.

What the index holds comes from the zoo's own modules and plugins only: names registered at run
time (an interactive ``@register``, a test) are not written; lookups here still see them, since the
live registry is asked first.

    from zoo.index import index, kind_of, known_kind
    known_kind("resnet20")      # "scratch"; None for an unknown name
    kind_of("resnet2")          # ZooError: unknown architecture 'resnet2'; did you mean resnet20?
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
import tempfile
from importlib.metadata import PackageNotFoundError, entry_points, version
from pathlib import Path
from typing import Any

from zoo import registry
from zoo.registry import ENTRY_POINT_GROUP, KINDS, ModelEntry, unknown_architecture
from zoo.weights import cache_root

log = logging.getLogger(__name__)
_UMASK = os.umask(0)
os.umask(_UMASK)

INDEX_FILE = "zoo-index.json"
FORMAT = 1  # bump when the file's layout or the meaning of a row changes
ROW_FIELDS = ("name", "kind", "family", "params", "flops", "input_size", "note")
_BACKEND_DISTRIBUTIONS = {
    "tensorflow": ("tensorflow", "tensorflow-cpu"),
    "jax": ("jax",),
    "torch": ("torch",),
}


# ---- where and under which key ------------------------------------------------------------------


def index_path() -> Path:
    return cache_root() / INDEX_FILE


def installed_version(distribution: str) -> str | None:
    """The installed version of ``distribution`` (None: not installed); imports nothing."""
    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def sources_hash() -> str:
    """SHA-256 over the zoo package's Python files (relative path and bytes, in path order)."""
    package = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        digest.update(path.relative_to(package).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def plugins() -> list[list[str | None]]:
    """The installed ``zoobench.models`` entry points, not loaded: [name, value, dist, version]."""
    rows = set()
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)
        meta = getattr(dist, "metadata", None)
        name = meta["Name"] if meta is not None else None
        rows.add((ep.name, ep.value, name, getattr(dist, "version", None)))
    return [list(row) for row in sorted(rows, key=lambda r: tuple(str(x) for x in r))]


def cache_key() -> dict[str, Any]:
    """What the cached index must have been built under to be trusted."""
    return {
        "format": FORMAT,
        "zoobench": installed_version("zoobench"),
        "keras": installed_version("keras"),
        "keras_tuner": installed_version("keras-tuner"),
        "zoo_sources": sources_hash(),
        "plugins": plugins(),
    }


def _backend() -> str:
    """The Keras backend this process uses or will use, read without importing Keras."""
    keras = sys.modules.get("keras")
    if keras is not None and hasattr(keras, "backend"):
        with contextlib.suppress(Exception):
            return str(keras.backend.backend())
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    from zoo.weights import keras_home

    with contextlib.suppress(OSError, ValueError, AttributeError):
        config = json.loads((keras_home() / "keras.json").read_text())
        if isinstance(config.get("backend"), str):
            return config["backend"]
    return "tensorflow"


def rows_key(num_classes: int) -> str:
    """Which ``zoo list`` rows are the same: the backend, its version, the number of classes."""
    backend = _backend()
    versions = (installed_version(d) for d in _BACKEND_DISTRIBUTIONS.get(backend, (backend,)))
    found = next((v for v in versions if v), None)
    return f"{backend} {found or '?'} classes={int(num_classes)}"


# ---- reading and writing the file ---------------------------------------------------------------


def _digest(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _valid_model(meta: Any) -> bool:
    return (
        isinstance(meta, dict)
        and meta.get("kind") in KINDS
        and all(isinstance(meta.get(k), str) for k in ("family", "paper", "description", "module"))
        and isinstance(meta.get("input_size"), int)
        and isinstance(meta.get("extra", {}), dict)
    )


def _valid_row(name: str, row: Any, models: dict[str, Any]) -> bool:
    return (
        isinstance(row, dict)
        and set(ROW_FIELDS) <= set(row)
        and row["name"] == name
        and name in models
        and row["kind"] == models[name]["kind"]
        and all(row[k] is None or isinstance(row[k], int) for k in ("params", "flops"))
        and isinstance(row["input_size"], int)
        and isinstance(row["note"], str)
    )


def _read(key: dict[str, Any]) -> dict[str, Any] | None:
    """The file's body when it is intact and was built under ``key``; None otherwise (and why)."""
    path = index_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.info("ignoring the zoo index %s: unreadable (%s)", path, exc)
        return None
    if not isinstance(data, dict) or not isinstance(data.get("body"), dict):
        log.info("ignoring the zoo index %s: not an index", path)
        return None
    body = data["body"]
    if data.get("digest") != _digest(body):
        log.info("ignoring the zoo index %s: its digest does not match its content", path)
        return None
    if body.get("key") != key:
        log.info("ignoring the zoo index %s: built for another zoo (key changed)", path)
        return None
    models, rows = body.get("models"), body.get("rows", {})
    if not isinstance(models, dict) or not all(_valid_model(m) for m in models.values()):
        log.info("ignoring the zoo index %s: malformed models", path)
        return None
    if not isinstance(rows, dict) or not all(
        isinstance(group, dict) and all(_valid_row(n, r, models) for n, r in group.items())
        for group in rows.values()
    ):
        log.info("ignoring the zoo index %s: malformed rows", path)
        return None
    return {"key": key, "models": models, "rows": rows}


def _write(body: dict[str, Any]) -> None:
    """Write atomically; a cache that cannot be written only costs a rebuild next time."""
    path = index_path()
    text = json.dumps({"digest": _digest(body), "body": body}, indent=1, sort_keys=True) + "\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; read like any other cache file
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    except OSError as exc:
        log.info("could not write the zoo index %s: %s", path, exc)


# ---- building it from the live registry ---------------------------------------------------------


def _json_safe(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def describe(entry: ModelEntry) -> dict[str, Any]:
    """An entry's metadata as plain JSON data (the builder and callable extras left out)."""
    meta = {
        "kind": entry.kind,
        "family": entry.family,
        "input_size": int(entry.input_size),
        "paper": entry.paper,
        "description": entry.description,
        "module": entry.module,
        "extra": {k: v for k, v in entry.extra.items() if not callable(v) and _json_safe(v)},
    }
    return json.loads(json.dumps(meta))  # as it reads back from the file (tuples become lists)


def _own_prefixes(key: dict[str, Any]) -> tuple[str, ...]:
    """The module prefixes of the zoo's own code and of the installed plugins' packages."""
    prefixes = ["zoo"]
    for _name, value, *_ in key["plugins"]:
        prefixes.append(str(value).split(":", 1)[0].split(".", 1)[0].strip())
    return tuple(prefixes)


def is_indexed_module(module: str, key: dict[str, Any]) -> bool:
    """Whether an entry registered by ``module`` belongs in the cached index (not run-time)."""
    return any(module == p or module.startswith(p + ".") for p in _own_prefixes(key))


def _from_registry(key: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """(models, complete) from the live registry, loading the zoo and its plugins first."""
    registry._load_builtin_and_plugins()
    models = {
        name: describe(entry)
        for name, entry in sorted(registry._REGISTRY.items())
        if is_indexed_module(entry.module, key)
    }
    current = {(name, value) for name, value, *_ in key["plugins"]}
    failed = sorted(set(registry._plugin_failures) & current)
    if failed:
        log.info("not caching the zoo index: plugin(s) failed to load: %s", failed)
    return models, not failed


def load(*, refresh: bool = False) -> dict[str, Any]:
    """The index's body ``{"key", "models", "rows"}``: the cached one when trusted, else rebuilt
    from the registry (importing the zoo, as ``zoo.list_models`` does) and written."""
    key = cache_key()
    if not refresh:
        body = _read(key)
        if body is not None:
            return body
    models, complete = _from_registry(key)
    body = {"key": key, "models": models, "rows": {}}
    if complete:
        _write(body)
    return body


def index(*, refresh: bool = False) -> dict[str, dict[str, Any]]:
    """name -> {kind, family, input_size, paper, description, module, extra} for the zoo's own
    and plugins' architectures (Keras imported only when the cache has to be rebuilt)."""
    return load(refresh=refresh)["models"]


def save_rows(num_classes: int, rows: list[dict[str, Any]]) -> None:
    """Remember ``zoo list`` rows (those of indexed architectures) for ``num_classes``.

    Rows of names the index does not hold, or whose live entry now comes from elsewhere, are not
    kept; neither are rows whose model could not be built (that may pass: it is retried).
    """
    key = cache_key()
    body = _read(key)
    if body is None:
        return  # the index was not written (or is stale): rows would be keyed to nothing
    models = body["models"]
    group = dict(body["rows"].get(rows_key(num_classes), {}))
    added = 0
    for row in rows:
        name = row.get("name")
        live = registry._REGISTRY.get(name)
        if name not in models or (live is not None and describe(live) != models[name]):
            continue
        if row.get("note", "").startswith("unavailable") or not _valid_row(name, row, models):
            continue
        group[name] = {k: row[k] for k in ROW_FIELDS}
        added += 1
    if added:
        body["rows"] = dict(body["rows"], **{rows_key(num_classes): group})
        _write(body)


def cached_rows(num_classes: int, body: dict[str, Any] | None = None) -> dict[str, dict]:
    """name -> ``zoo list`` row remembered for this backend and ``num_classes``."""
    body = load() if body is None else body
    group = body["rows"].get(rows_key(num_classes), {})
    return {name: {k: row[k] for k in ROW_FIELDS} for name, row in group.items()}


# ---- cheap lookups ------------------------------------------------------------------------------


def known_kind(name: str) -> str | None:
    """``"scratch"`` / ``"pretrained"`` for a known architecture, None otherwise.

    The live registry answers first (names registered at run time included); once the zoo is
    loaded it alone answers. Otherwise the cached index does, without importing Keras.
    """
    entry = registry._REGISTRY.get(name)
    if entry is not None:
        return entry.kind
    if registry._loaded:
        return None
    meta = index().get(name)
    return meta["kind"] if meta else None


def kind_of(name: str) -> str:
    """``known_kind`` for a name that must exist: an unknown one raises the registry's one-line
    ``ZooError`` with its "did you mean" hint."""
    kind = known_kind(name)
    if kind is not None:
        return kind
    known = set(registry._REGISTRY) if registry._loaded else set(index()) | set(registry._REGISTRY)
    raise unknown_architecture(name, known)


def recipe_of(name: str) -> str | None:
    """The training recipe an architecture names (``@register(..., recipe=...)``), None if none.

    Answered like :func:`known_kind`: the live registry first, else the cached index (no Keras).
    """
    entry = registry._REGISTRY.get(name)
    if entry is not None:
        return entry.extra.get("recipe")
    if registry._loaded:
        return None
    meta = index().get(name)
    return (meta.get("extra") or {}).get("recipe") if meta else None
