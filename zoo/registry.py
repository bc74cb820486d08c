"""The model registry: one decorator records a builder; ``build(name)`` is the single door.

An architecture is one function ``builder(hp, input_shape, num_classes) -> keras.Model``. ``hp`` is a
``keras_tuner.HyperParameters``: its ``hp.Int`` / ``hp.Choice`` / ``hp.Float`` calls return their
defaults when nothing searches, so the same function builds the default model and serves the tuner.

Built-in architectures live in ``zoo/architectures/*.py`` and are imported on first use (importing
this module does not import Keras). Third-party packages add models through the entry-point group
``zoobench.models``: each entry point names a module whose import runs ``@register`` decorators.
Names and kinds without importing anything: ``zoo.index`` (a cached index of this registry).
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import logging
import pkgutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "zoobench.models"
KINDS = ("scratch", "pretrained")


class ZooError(Exception):
    """Unknown or badly registered architecture; the CLI prints the message without a traceback."""


@dataclass(frozen=True)
class ModelEntry:
    """A registered architecture and what people need to know about it."""

    name: str
    builder: Callable[..., Any]
    family: str
    kind: str
    description: str
    paper: str
    input_size: (
        int  # the input side the architecture is designed for (pretrained: its ImageNet size)
    )
    module: str
    extra: dict = field(default_factory=dict)

    def build(self, hp=None, input_shape=(32, 32, 3), num_classes: int = 10):
        """Build with ``hp`` (fresh HyperParameters, i.e. every default, when None)."""
        import keras_tuner

        hp = keras_tuner.HyperParameters() if hp is None else hp
        model = self.builder(hp, tuple(input_shape), int(num_classes))
        if model.name in ("functional", "sequential", "model"):
            model.name = self.name
        return model


_REGISTRY: dict[str, ModelEntry] = {}
_loaded = False
# (entry-point name, value) -> why it failed, for the last load: a zoo missing a plugin's models is
# not written to the cached index (zoo.index), so fixing the plugin needs no cache clearing.
_plugin_failures: dict[tuple[str, str], str] = {}


def register(
    name: str,
    *,
    family: str,
    kind: str = "scratch",
    paper: str = "",
    description: str | None = None,
    input_size: int = 32,
    **extra: Any,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator recording ``builder`` under ``name``. Registering a name twice is an error."""
    if kind not in KINDS:
        raise ZooError(f"register({name!r}): kind must be one of {', '.join(KINDS)}, got {kind!r}")

    def decorator(builder: Callable[..., Any]) -> Callable[..., Any]:
        if name in _REGISTRY:
            previous = _REGISTRY[name].module
            raise ZooError(f"architecture {name!r} is already registered (by {previous})")
        doc = (builder.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = ModelEntry(
            name=name,
            builder=builder,
            family=family,
            kind=kind,
            description=description or (doc[0] if doc else name),
            paper=paper,
            input_size=int(input_size),
            module=builder.__module__,
            extra=dict(extra),
        )
        return builder

    return decorator


def unregister(name: str) -> None:
    """Remove ``name`` (for tests and interactive experiments)."""
    _REGISTRY.pop(name, None)


def _load_builtin_and_plugins() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    import zoo.architectures as package
    from zoo.quiet import import_backend_quietly

    import_backend_quietly()

    _plugin_failures.clear()
    for info in pkgutil.iter_modules(package.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package.__name__}.{info.name}")
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except ZooError:
            raise
        except Exception as exc:  # a broken plugin must not take the built-in zoo down with it
            _plugin_failures[(ep.name, ep.value)] = f"{type(exc).__name__}: {exc}"
            log.warning(
                "could not load zoobench.models entry point %s (%s): %s", ep.name, ep.value, exc
            )


def list_models(
    pattern: str | None = None, *, kind: str | None = None, family: str | None = None
) -> list[str]:
    """Registered names, sorted; ``pattern`` is a shell wildcard such as ``"resnet*"``."""
    _load_builtin_and_plugins()
    names = sorted(_REGISTRY)
    if pattern:
        names = fnmatch.filter(names, pattern)
    if kind:
        names = [n for n in names if _REGISTRY[n].kind == kind]
    if family:
        names = [n for n in names if _REGISTRY[n].family == family]
    return names


def get(name: str) -> ModelEntry:
    """The entry for ``name``; an unknown name fails listing the close matches."""
    _load_builtin_and_plugins()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise unknown_architecture(name, _REGISTRY) from None


def unknown_architecture(name: str, known: Iterable[str]) -> ZooError:
    """The one-line error for a name that is not in ``known``, naming the close matches."""
    close = difflib.get_close_matches(name, sorted(known), n=5, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see `zoobench zoo list`"
    return ZooError(f"unknown architecture {name!r}{hint}")


def build(name: str, hp=None, input_shape=(32, 32, 3), num_classes: int = 10):
    """Build architecture ``name`` (default hyperparameters unless ``hp`` says otherwise)."""
    return get(name).build(hp, input_shape=input_shape, num_classes=num_classes)
