"""What a report reads from a run store, loaded once and checked: labels, class names, entries.

A report must work on a run that is still going or was killed: every array here may be missing,
and a missing or malformed one becomes ``None`` plus a note, never an exception.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmark import atomic
from benchmark.errors import ZoobenchError
from benchmark.store import Entry, RunStore

log = logging.getLogger(__name__)


@dataclass
class RunData:
    """One run folder as a report sees it."""

    store: RunStore
    meta: dict[str, Any]
    class_names: list[str]
    y_val: np.ndarray | None
    y_test: np.ndarray | None
    members: list[Entry]
    ensembles: list[Entry]
    notes: list[str] = field(default_factory=list)
    _probs: dict[tuple[str, str], np.ndarray | None] = field(default_factory=dict, repr=False)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def entries(self) -> list[Entry]:
        return [*self.members, *self.ensembles]

    def entry(self, key: str) -> Entry:
        """The entry whose key (see :func:`entry_key`) is ``key``."""
        for e in self.entries:
            if entry_key(e) == key:
                return e
        raise KeyError(key)

    def probs(self, entry: Entry, split: str) -> np.ndarray | None:
        """``entry``'s probabilities on ``split``, or None when missing or of the wrong shape."""
        key = (entry_key(entry), split)
        if key not in self._probs:
            self._probs[key] = self._load_probs(entry, split)
        return self._probs[key]

    def _load_probs(self, entry: Entry, split: str) -> np.ndarray | None:
        labels = self.y_val if split == "val" else self.y_test
        path = entry.path / f"{split}_probs.npy"
        if labels is None or not path.is_file():
            return None
        try:
            probs = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            self._note(f"{_rel(self.store, path)} cannot be read ({exc}); its scores are left out")
            return None
        expected = (len(labels), self.num_classes)
        if probs.shape != expected:
            self._note(
                f"{_rel(self.store, path)} has shape {probs.shape}, expected {expected}; "
                "its scores are left out"
            )
            return None
        return probs.astype(np.float64)

    def _note(self, text: str) -> None:
        log.warning(text)
        self.notes.append(text)


def entry_key(entry: Entry) -> str:
    """A key unique across members and ensembles (an ensemble may share a member's folder name)."""
    return f"{entry.path.parent.name}/{entry.path.name}"


def is_ensemble(entry: Entry) -> bool:
    return entry.path.parent.name == "ensembles"


def load_run(store: RunStore) -> RunData:
    """Read ``store`` for a report; an unknown or empty folder is a one-line ZoobenchError."""
    root = store.root
    if not root.is_dir():
        raise ZoobenchError(f"run folder {root} does not exist")
    if not store.exists() and not store.members_dir.is_dir():
        raise ZoobenchError(f"{root} is not a zoobench run: it has no run.json and no members/")
    notes: list[str] = []
    try:
        meta = store.read_run()
    except ValueError as exc:
        raise ZoobenchError(f"{store.run_json} is not valid JSON: {exc}") from exc
    if not meta:
        notes.append("run.json is missing: the run's settings are unknown")
    y_val = _labels(store, "val", notes)
    y_test = _labels(store, "test", notes)
    members = _entries(store, store.members_dir, notes, include_incomplete=True)
    # Ensembles are recomputed in seconds, and ensembles/best/ is a pointer with no metrics.json:
    # only complete ensembles are rows.
    ensembles = _entries(store, store.ensembles_dir, notes, include_incomplete=False)
    class_names = [str(c) for c in (meta.get("data") or {}).get("class_names") or []]
    if not class_names:
        num = _guess_num_classes(store, [*members, *ensembles], y_val, y_test)
        class_names = [str(i) for i in range(num)]
        if num:
            notes.append("run.json has no class names: classes are shown by their label number")
    return RunData(store, meta, class_names, y_val, y_test, members, ensembles, notes)


def _labels(store: RunStore, split: str, notes: list[str]) -> np.ndarray | None:
    path = store.data_dir / f"y_{split}.npy"
    if not path.is_file():
        notes.append(f"data/y_{split}.npy is missing: {split} scores are left out")
        return None
    return np.load(path, allow_pickle=False).astype(np.int64).ravel()


def _entries(
    store: RunStore, folder: Path, notes: list[str], include_incomplete: bool
) -> list[Entry]:
    """Stored entries; with ``include_incomplete`` also those without metrics.json ('incomplete')."""
    if not folder.is_dir():
        return []
    entries = []
    for path in sorted(p for p in folder.iterdir() if p.is_dir()):
        if not include_incomplete and not (path / "metrics.json").is_file():
            continue
        if not (path / "config.json").is_file():
            notes.append(f"{_rel(store, path)} has no config.json yet and is left out")
            continue
        try:
            config = atomic.read_json(path / "config.json")
            metrics_path = path / "metrics.json"
            if metrics_path.is_file():
                metrics = atomic.read_json(metrics_path)
            else:
                metrics = {
                    "status": "incomplete",
                    "reason": "no metrics.json: running or interrupted",
                }
        except ValueError as exc:
            notes.append(f"{_rel(store, path)} has unreadable JSON ({exc}) and is left out")
            continue
        entries.append(Entry(path, config, metrics))
    return sorted(entries, key=lambda e: str(e.metrics.get("finished_at", "~")))


def _guess_num_classes(store, entries, y_val, y_test) -> int:
    for entry in entries:
        for split in ("val", "test"):
            path = entry.path / f"{split}_probs.npy"
            if path.is_file():
                return int(np.load(path, mmap_mode="r").shape[1])
    labels = [y for y in (y_val, y_test) if y is not None and len(y)]
    return int(max(y.max() for y in labels)) + 1 if labels else 0


def _rel(store: RunStore, path: Path) -> str:
    try:
        return str(path.relative_to(store.root))
    except ValueError:
        return str(path)
