"""The run store: one folder per run, every file written atomically, readable by any later process.

    runs/NAME/run.json                 profile, seed, data summary (source, fingerprint), versions
    runs/NAME/data/                    y_val.npy, y_test.npy, x_test.npy, sample_x.npy, sample_y.npy
    runs/NAME/members/ID/              config.json model.keras history.csv val_probs.npy
                                       test_probs.npy metrics.json
    runs/NAME/tuner/...                Keras Tuner's own project folders
    runs/NAME/ensembles/NAME/          config.json val_probs.npy test_probs.npy metrics.json model.keras
    runs/NAME/leaderboard.csv
    runs/NAME/report/                  index.html README.md figures/*.png

A member or ensemble is complete when its ``metrics.json`` exists: it is written last, so a run
killed at any moment leaves either a complete entry or one that the next run starts over. Ensembles
and reports read this store, never the training code.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmark import atomic

STATUSES = ("done", "failed", "skipped")
BEST = "best"  # ensembles/best/: the exported winner, a pointer folder without metrics.json


def member_id(definition: dict[str, Any]) -> str:
    """Stable ID from what defines a member (architecture, hp, training, data, seed): 12 hex chars."""
    canonical = json.dumps(definition, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


@dataclass
class Entry:
    """A member or an ensemble as stored: its folder, config and metrics, probabilities on demand."""

    path: Path
    config: dict[str, Any]
    metrics: dict[str, Any]

    @property
    def id(self) -> str:
        return self.path.name

    @property
    def name(self) -> str:
        return str(self.config.get("name", self.path.name))

    @property
    def status(self) -> str:
        return str(self.metrics.get("status", "done"))

    @property
    def ok(self) -> bool:
        return self.status == "done"

    @property
    def model_path(self) -> Path:
        return self.path / "model.keras"

    def probs(self, split: str) -> np.ndarray:
        """Predicted class probabilities on ``split`` ('val' or 'test'), shape (N, classes)."""
        return np.load(self.path / f"{split}_probs.npy", allow_pickle=False)

    def history(self):
        """Training history as a pandas DataFrame (empty when the entry has none)."""
        import pandas as pd

        path = self.path / "history.csv"
        return pd.read_csv(path) if path.is_file() else pd.DataFrame()


class RunStore:
    """Read and write one run folder."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    # ---- run-level files -------------------------------------------------------------------------
    @property
    def run_json(self) -> Path:
        return self.root / "run.json"

    def exists(self) -> bool:
        return self.run_json.is_file()

    def read_run(self) -> dict[str, Any]:
        return atomic.read_json(self.run_json) if self.run_json.is_file() else {}

    def write_run(self, meta: dict[str, Any]) -> None:
        atomic.write_json(self.run_json, meta)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def save_array(self, name: str, array: np.ndarray) -> None:
        atomic.save_npy(self.data_dir / f"{name}.npy", array)

    def load_array(self, name: str) -> np.ndarray:
        path = self.data_dir / f"{name}.npy"
        if not path.is_file():
            raise FileNotFoundError(f"run store {self.root} has no {path.relative_to(self.root)}")
        return np.load(path, allow_pickle=False)

    def labels(self, split: str) -> np.ndarray:
        """Integer labels of 'val' or 'test'. Test labels are for scoring the finished leaderboard."""
        return self.load_array(f"y_{split}")

    @property
    def tuner_dir(self) -> Path:
        return self.root / "tuner"

    @property
    def leaderboard_csv(self) -> Path:
        return self.root / "leaderboard.csv"

    @property
    def report_dir(self) -> Path:
        return self.root / "report"

    # ---- members and ensembles -------------------------------------------------------------------
    @property
    def members_dir(self) -> Path:
        return self.root / "members"

    @property
    def ensembles_dir(self) -> Path:
        return self.root / "ensembles"

    def member_dir(self, mid: str) -> Path:
        return self.members_dir / mid

    def ensemble_dir(self, name: str) -> Path:
        return self.ensembles_dir / name

    def is_complete(self, path: Path) -> bool:
        return (path / "metrics.json").is_file()

    def members(self, include_incomplete: bool = False) -> list[Entry]:
        """Stored members, in the order they were finished."""
        return self._entries(self.members_dir, include_incomplete)

    def ensembles(self) -> list[Entry]:
        return self._entries(self.ensembles_dir, False)

    def member(self, mid: str) -> Entry:
        return self._entry(self.member_dir(mid))

    def ensemble(self, name: str) -> Entry:
        return self._entry(self.ensemble_dir(name))

    def _entries(self, folder: Path, include_incomplete: bool) -> list[Entry]:
        if not folder.is_dir():
            return []
        entries = [
            self._entry(p)
            for p in sorted(folder.iterdir())
            if p.is_dir() and (include_incomplete or self.is_complete(p))
        ]
        return sorted(entries, key=lambda e: e.metrics.get("finished_at", ""))

    def _entry(self, path: Path) -> Entry:
        config_path, metrics_path = path / "config.json", path / "metrics.json"
        if not config_path.is_file():
            raise FileNotFoundError(f"{path} has no config.json: not a stored member or ensemble")
        config = atomic.read_json(config_path)
        metrics = (
            atomic.read_json(metrics_path) if metrics_path.is_file() else {"status": "running"}
        )
        return Entry(path, config, metrics)

    def write_entry(
        self,
        path: Path,
        *,
        config: dict[str, Any],
        metrics: dict[str, Any],
        val_probs: np.ndarray | None = None,
        test_probs: np.ndarray | None = None,
        history=None,
    ) -> Entry:
        """Write everything but the model, then ``metrics.json`` last: that marks the entry complete.

        The caller saves ``model.keras`` (atomically, see :func:`save_model`) before calling this.
        """
        if metrics.get("status", "done") not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {metrics.get('status')!r}")
        path.mkdir(parents=True, exist_ok=True)
        atomic.write_json(path / "config.json", config)
        if val_probs is not None:
            atomic.save_npy(path / "val_probs.npy", np.asarray(val_probs, dtype=np.float32))
        if test_probs is not None:
            atomic.save_npy(path / "test_probs.npy", np.asarray(test_probs, dtype=np.float32))
        if history is not None and len(history):
            with atomic.atomic_path(path / "history.csv") as tmp:
                history.to_csv(tmp, index=False)
        atomic.write_json(path / "metrics.json", metrics)
        return Entry(path, config, metrics)

    def discard_incomplete(self, folder: Path) -> None:
        """Remove the leftovers of an entry whose run was interrupted (no metrics.json)."""
        if folder.is_dir() and not self.is_complete(folder):
            shutil.rmtree(folder)

    def iter_incomplete(self) -> Iterator[Path]:
        """Member and ensemble folders without metrics.json (``ensembles/best`` is a pointer, not one)."""
        for folder in (self.members_dir, self.ensembles_dir):
            if folder.is_dir():
                yield from (
                    p
                    for p in folder.iterdir()
                    if p.is_dir() and not self.is_complete(p) and p != self.ensembles_dir / BEST
                )


def save_model(model, path: str | os.PathLike) -> None:
    """``model.save`` to a temp file beside ``path``, then rename: never a half-written model."""
    with atomic.atomic_path(Path(path).with_suffix(".keras")) as tmp:
        final_tmp = tmp.with_name(tmp.name + ".keras")  # Keras insists on the .keras suffix
        try:
            model.save(final_tmp)
            os.replace(final_tmp, tmp)
        finally:
            final_tmp.unlink(missing_ok=True)
