"""One run as a report sees it: what the run store returns, read once, with notes on what is missing.

A report must work on a run that is still going or was killed: every array may be missing, and a
missing or malformed one becomes ``None`` plus a note, never an exception. The folder layout is the
run store's business (``benchmark.store.runstore.RunStore``): this module only asks it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from benchmark.errors import ZoobenchError
from benchmark.store.runstore import Entry, RunStore

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
    _probs: dict[tuple[str, str, bool], np.ndarray | None] = field(default_factory=dict, repr=False)
    _calibrations: dict[str, dict[str, Any] | None] = field(default_factory=dict, repr=False)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def entries(self) -> list[Entry]:
        return [*self.members, *self.ensembles]

    def entry(self, key: str) -> Entry:
        """The entry whose ``Entry.key`` is ``key``."""
        for e in self.entries:
            if e.key == key:
                return e
        raise KeyError(key)

    def probs(self, entry: Entry, split: str, calibrated: bool = True) -> np.ndarray | None:
        """``entry``'s probabilities on ``split``, or None when missing or of the wrong shape.

        Calibrated (temperature-scaled) when the entry has a calibration, as its exported model
        gives them; ``calibrated=False``: those before calibration."""
        key = (entry.key, split, calibrated and self.calibration(entry) is not None)
        if key not in self._probs:
            self._probs[key] = self._load_probs(entry, split, key[2])
        return self._probs[key]

    def calibration(self, entry: Entry) -> dict[str, Any] | None:
        """``entry``'s temperature scaling (``Entry.calibration``), or None; a damaged one is a
        note, and the entry's uncalibrated probabilities are reported instead."""
        if entry.key not in self._calibrations:
            try:
                self._calibrations[entry.key] = entry.calibration()
            except ZoobenchError as exc:
                self._note(f"{exc}; {entry.key} is shown uncalibrated")
                self._calibrations[entry.key] = None
        return self._calibrations[entry.key]

    def _load_probs(self, entry: Entry, split: str, calibrated: bool) -> np.ndarray | None:
        labels = self.y_val if split == "val" else self.y_test
        where = f"{entry.key}/{entry.probs_path(split).name}"
        if labels is None:
            return None
        try:
            probs = entry.probs(split, calibrated=calibrated)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            self._note(f"{where} cannot be read ({exc}); its scores are left out")
            return None
        expected = (len(labels), self.num_classes)
        if probs.shape != expected:
            self._note(
                f"{where} has shape {probs.shape}, expected {expected}; its scores are left out"
            )
            return None
        return probs.astype(np.float64)

    def _note(self, text: str) -> None:
        log.warning(text)
        self.notes.append(text)


def load_run(store: RunStore) -> RunData:
    """Read ``store`` for a report; an unknown or empty folder is a one-line ZoobenchError."""
    root = store.root
    if not root.is_dir():
        raise ZoobenchError(f"run folder {root} does not exist")
    if not store.exists() and not store.members_dir.is_dir():
        raise ZoobenchError(f"{root} is not a zoobench run: it has no run.json and no members/")
    notes: list[str] = []
    meta = store.read_run()
    if not meta:
        notes.append("run.json is missing: the run's settings are unknown")
    y_val = store.labels("val", notes)
    y_test = store.labels("test", notes)
    # Unfinished members are rows (a report of a running run shows them); ensembles are recomputed
    # in seconds, so only complete ones are.
    members = store.members(include_unfinished=True, notes=notes)
    ensembles = store.ensembles(notes=notes)
    class_names = store.class_names()
    if not class_names:
        num = _guess_num_classes([*members, *ensembles], y_val, y_test)
        class_names = [str(i) for i in range(num)]
        if num:
            notes.append("run.json has no class names: classes are shown by their label number")
    return RunData(store, meta, class_names, y_val, y_test, members, ensembles, notes)


def _guess_num_classes(entries: list[Entry], y_val, y_test) -> int:
    for entry in entries:
        for split in ("val", "test"):
            try:
                return int(entry.probs(split, calibrated=False).shape[1])
            except (OSError, ValueError, IndexError):
                continue
    labels = [y for y in (y_val, y_test) if y is not None and len(y)]
    return int(max(y.max() for y in labels)) + 1 if labels else 0
