"""The run store: one folder per run, every file written atomically, readable by any later process.

    runs/NAME/run.json                 profile, seed, data summary (source, fingerprint), versions
    runs/NAME/data/                    y_val.npy, y_test.npy, x_test.npy, sample_x.npy, sample_y.npy
    runs/NAME/members/ID/              config.json model.keras history.csv val_probs.npy
                                       test_probs.npy metrics.json
    runs/NAME/tuner/...                Keras Tuner's own project folders
    runs/NAME/ensembles/NAME/          config.json val_probs.npy test_probs.npy metrics.json model.keras
    members/ID/, ensembles/NAME/       [temperature.json calibrated_val_probs.npy
                                       calibrated_test_probs.npy]: temperature scaling, after
    runs/NAME/leaderboard.csv
    runs/NAME/report/                  index.html README.md figures/*.png

A member or ensemble is complete when its ``metrics.json`` exists: it is written last, so a run
killed at any moment leaves either a complete entry or one that the next run starts over. Ensembles
and reports read this store, never the training code.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import shutil
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from benchmark import atomic
from benchmark.errors import ZoobenchError
from benchmark.store.records import (
    WRITTEN,
    EnsembleConfig,
    MemberConfig,
    Metrics,
    RunRecord,
    Status,
)

STATUSES = tuple(s.value for s in WRITTEN)
UNFINISHED = (
    Status.UNFINISHED
)  # the status of an entry without metrics.json: running or interrupted
# An entry folder's files (only this module spells them).
CONFIG_JSON, METRICS_JSON, MODEL_FILE = "config.json", "metrics.json", "model.keras"
HISTORY_CSV, STACKER_NPZ, ERROR_FILE = "history.csv", "stacker.npz", "error.txt"
BEST = "best"  # ensembles/best/: the exported winner, a pointer folder without metrics.json
STAGED, RETIRED = "ensembles.new", "ensembles.old"  # an ensembles rebuild before / after the swap
MARKER, LOCK = (
    ".zoobench",
    ".zoobench.lock",
)  # benchmark.store.runfolder: "a zoobench run", "in use"
# Everything zoobench writes at a run folder's top level (``--fresh`` removes these, nothing else).
TOP_LEVEL = frozenset(
    {
        MARKER,
        LOCK,
        "run.json",
        "data",
        "members",
        "ensembles",
        STAGED,
        RETIRED,
        "tuner",
        "leaderboard.csv",
        "report",
        "cache",
        "tensorboard",
        "error.txt",
        "refit",
    }
)
MEMBER, ENSEMBLE = "member", "ensemble"
# benchmark.run.robustness's results in an entry's folder: written after the entry, outside its hashes.
ROBUSTNESS_JSON, ROBUSTNESS_PROBS = "robustness.json", "robustness_probs.npz"
# ensembles.build's temperature scaling of an entry (ensembles.calibration): written after the entry,
# outside its hashes; temperature.json (last) holds its own files' hashes and those of the
# probabilities it was fit on, so a stale or edited calibration is never used.
CALIBRATION_JSON = "temperature.json"
CALIBRATED_PROBS = {"val": "calibrated_val_probs.npy", "test": "calibrated_test_probs.npy"}
POST_HOC = frozenset(
    {ROBUSTNESS_JSON, ROBUSTNESS_PROBS, CALIBRATION_JSON, *CALIBRATED_PROBS.values()}
)
_STATUS_ORDER = {
    Status.DONE: 0,
    Status.UNFINISHED: 1,
    Status.SKIPPED: 2,
    Status.FAILED: 3,
    Status.UNKNOWN: 4,
}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def member_id(definition: dict[str, Any]) -> str:
    """Stable ID from what defines a member (architecture, hp, training, data, seed): 12 hex chars."""
    canonical = json.dumps(definition, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def rank_key(
    status: str, val_accuracy: float | None, val_loss: float | None, kind: str, name: str
) -> tuple:
    """The one ranking (leaderboard rows, ``select_best``, predict's "best"), best first.

    Finished rows first; then higher validation accuracy, lower validation loss, members before
    ensembles (on a full tie the cheaper model wins) and the name. Test scores never enter.
    """

    def number(value: float | None, missing: float) -> float:
        try:
            value = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return missing
        return missing if math.isnan(value) else value

    return (
        _STATUS_ORDER.get(Status.read(status), 9),
        -number(val_accuracy, -math.inf),
        number(val_loss, math.inf),
        kind == ENSEMBLE,
        name,
    )


@dataclass
class Entry:
    """A member or an ensemble as stored: its folder, kind, typed config and metrics (``settings``,
    ``record``); ``config`` / ``metrics`` are their JSON objects, as the files hold them."""

    path: Path
    settings: MemberConfig | EnsembleConfig
    record: Metrics
    kind: str = MEMBER  # MEMBER or ENSEMBLE

    @cached_property
    def config(self) -> dict[str, Any]:
        return self.settings.to_json()

    @cached_property
    def metrics(self) -> dict[str, Any]:
        return self.record.to_json()

    @property
    def id(self) -> str:
        return self.path.name

    @property
    def key(self) -> str:
        """Unique across members and ensembles (an ensemble may share a member's folder name)."""
        return f"{self.path.parent.name}/{self.path.name}"

    @property
    def is_ensemble(self) -> bool:
        return self.kind == ENSEMBLE

    @property
    def name(self) -> str:
        """The name people read: the config's, else built from the architecture or the method."""
        if self.config.get("name"):
            return str(self.config["name"])
        if self.is_ensemble:
            return f"{self.config.get('method') or 'ensemble'} ensemble"
        from benchmark.config.profiles import resizes_inside
        from benchmark.naming import member_name

        strategy = self.config.get("strategy")
        return member_name(
            str(self.config.get("architecture") or self.id),
            strategy,
            self.config.get("input_size") if resizes_inside(strategy) else None,
        )

    @property
    def status(self) -> Status:
        return self.record.status

    @property
    def ok(self) -> bool:
        return self.record.ok

    @property
    def rank_key(self) -> tuple:
        m = self.metrics
        return rank_key(self.status, m.get("val_accuracy"), m.get("val_loss"), self.kind, self.name)

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_FILE

    def stacker_arrays(self) -> dict[str, np.ndarray]:
        """A stacking ensemble's stacker arrays (``config.stacker`` holds its settings)."""
        settings = self.settings.stacker if isinstance(self.settings, EnsembleConfig) else None
        if not settings:
            raise ZoobenchError(f"{self.path} is not a stacking ensemble: it has no stacker")
        with np.load(self.path / settings.get("file", STACKER_NPZ), allow_pickle=False) as data:
            return {k: data[k] for k in data.files}

    def probs_path(self, split: str) -> Path:
        return self.path / f"{split}_probs.npy"

    def has_probs(self) -> bool:
        return all(self.probs_path(split).is_file() for split in ("val", "test"))

    def probs(self, split: str, calibrated: bool = True) -> np.ndarray:
        """Predicted class probabilities on ``split`` ('val' or 'test'; 'train' for a boosting
        round, see :meth:`RunStore.write_train_probs`), shape (N, classes).

        With a calibration (:meth:`calibration`) and ``calibrated``, the temperature-scaled ones:
        what the entry's exported model and ``predict`` return (validation: out-of-fold). With
        ``calibrated=False`` the probabilities before calibration (what ensembles combine).
        """
        if calibrated and split in CALIBRATED_PROBS and self.calibration() is not None:
            return np.load(self.path / CALIBRATED_PROBS[split], allow_pickle=False)
        return np.load(self.probs_path(split), allow_pickle=False)

    def calibration(self) -> dict[str, Any] | None:
        """The entry's temperature scaling (``temperature``, ``folds``, validation losses before and
        after...), or None when it has none. A record whose files or whose source probabilities
        changed since it was written is a one-line ZoobenchError: using it would scale other
        probabilities than those it was fit on."""
        path = self.path / CALIBRATION_JSON
        if not path.is_file():
            return None
        try:
            record = atomic.read_json(path)
            hashes = {**record["source"], **record["files"]}
            temperature = float(record["temperature"])
        except (OSError, ValueError, UnicodeDecodeError, KeyError, TypeError) as exc:
            raise ZoobenchError(
                f"{path} cannot be read ({exc}); the next `zoobench run` into this folder "
                "calibrates again"
            ) from None
        for name, expected in hashes.items():
            if not (self.path / name).is_file() or file_sha256(self.path / name) != expected:
                raise ZoobenchError(
                    f"{self.path / name} is missing or changed since {path.name} was written; "
                    "the next `zoobench run` into this folder calibrates again"
                )
        if not (temperature > 0 and math.isfinite(temperature)):
            raise ZoobenchError(f"{path} holds temperature {temperature}, not a positive number")
        return record

    @property
    def temperature(self) -> float | None:
        """The calibration's temperature (None: not calibrated)."""
        record = self.calibration()
        return None if record is None else float(record["temperature"])

    @property
    def train_probs_sha256(self) -> str | None:
        """The hash recorded for a boosting round's training-split probabilities (None: none)."""
        return self.record.files.get(self.probs_path("train").name)

    def verify(self) -> list[str]:
        """What no longer matches the hashes recorded when the entry was written ([]: intact).

        Entries written before hashes were recorded have none to check and pass; a metrics.json
        without a status zoobench writes is a problem (it is not read as done).
        """
        problems = []
        if self.record.status is Status.UNKNOWN:
            problems.append("metrics.json records no known status")
        for name, expected in self.record.files.items():
            path = self.path / name
            if not path.is_file():
                problems.append(f"{name} is missing")
            elif file_sha256(path) != expected:
                problems.append(f"{name} changed since it was written")
        return problems

    def history(self):
        """Training history as a pandas DataFrame (empty when the entry has none)."""
        import pandas as pd

        path = self.path / HISTORY_CSV
        return pd.read_csv(path) if path.is_file() else pd.DataFrame()

    def robustness(self) -> dict[str, Any] | None:
        """``benchmark.run.robustness``'s record (summary, per-corruption table, config hash), or None
        when the entry has none or it cannot be read (it is then measured again)."""
        path = self.path / ROBUSTNESS_JSON
        try:
            record = atomic.read_json(path) if path.is_file() else None
        except (OSError, ValueError, UnicodeDecodeError):
            return None
        return record if isinstance(record, dict) else None

    def robustness_probs(self) -> dict[str, np.ndarray]:
        """The stored probabilities on the corrupted images ({} when none or unreadable)."""
        path = self.path / ROBUSTNESS_PROBS
        try:
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile):
            return {}


class RunStore:
    """Read and write one run folder: the only code that knows its layout.

    Readers take an optional ``notes`` list: given one, they are tolerant (a report of a run that is
    still going or was killed): what is missing or unreadable becomes a note and is left out.
    Without it a damaged file is a one-line ZoobenchError naming the file.
    """

    def __init__(self, root: str | os.PathLike, ensembles_name: str = "ensembles"):
        self.root = Path(root)
        self._ensembles_name = ensembles_name  # "ensembles.new" while a rebuild is staged

    # ---- run-level files -------------------------------------------------------------------------
    @property
    def run_json(self) -> Path:
        return self.root / "run.json"

    def exists(self) -> bool:
        return self.run_json.is_file()

    def run_record(self) -> RunRecord | None:
        """run.json (None before the first run); a torn file is a ZoobenchError naming it."""
        if not self.run_json.is_file():
            return None
        data = self._read_json(self.run_json)
        if not isinstance(data, Mapping):
            raise ZoobenchError(f"{self.run_json} holds no JSON object: it was edited")
        return RunRecord.from_json(data)

    def read_run(self) -> dict[str, Any]:
        """run.json's object ({} before the first run), read through :class:`RunRecord`."""
        record = self.run_record()
        return {} if record is None else record.to_json()

    def write_run(self, record: RunRecord | Mapping[str, Any]) -> None:
        if isinstance(record, Mapping):
            record = RunRecord.from_json(record)
        atomic.write_json(self.run_json, record.to_json())

    def class_names(self) -> list[str]:
        """The class names run.json records ([] for a run that recorded none)."""
        record = self.run_record()
        return [] if record is None else record.class_names

    def image_shape(self) -> tuple[int, int, int] | None:
        """(H, W, C) of the run's images, which members were trained from (None: not recorded)."""
        record = self.run_record()
        return None if record is None else record.image_shape

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def save_array(self, name: str, array: np.ndarray) -> None:
        atomic.save_npy(self.data_dir / f"{name}.npy", array)

    def has_array(self, name: str) -> bool:
        return (self.data_dir / f"{name}.npy").is_file()

    def load_array(self, name: str) -> np.ndarray:
        path = self.data_dir / f"{name}.npy"
        if not path.is_file():
            raise FileNotFoundError(f"run store {self.root} has no {path.relative_to(self.root)}")
        return np.load(path, allow_pickle=False)

    def labels(self, split: str, notes: list[str] | None = None) -> np.ndarray | None:
        """Integer labels of 'val' or 'test'. Test labels are for scoring the finished leaderboard.

        Tolerant (``notes`` given): a missing file is a note and None.
        """
        if notes is not None and not self.has_array(f"y_{split}"):
            notes.append(f"data/y_{split}.npy is missing: {split} scores are left out")
            return None
        return self.load_array(f"y_{split}").astype(np.int64).ravel()

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        """The 25 training pictures and labels the report shows as a grid."""
        return self.load_array("sample_x"), self.load_array("sample_y")

    @property
    def tuner_dir(self) -> Path:
        return self.root / "tuner"

    @property
    def leaderboard_csv(self) -> Path:
        return self.root / "leaderboard.csv"

    def saved_leaderboard(self):
        """The leaderboard the last report build saved (a DataFrame), or None before the first."""
        import pandas as pd

        if not self.leaderboard_csv.is_file():
            return None
        try:
            return pd.read_csv(self.leaderboard_csv)
        except (OSError, ValueError, pd.errors.ParserError):
            return None

    def write_leaderboard(self, board) -> None:
        """leaderboard.csv from ``board`` (a DataFrame: ``reports.leaderboard``'s)."""
        with atomic.atomic_path(self.leaderboard_csv) as tmp:
            board.to_csv(tmp, index=False)

    def write_error(self, folder: Path, exc: BaseException) -> Path | None:
        """``exc``'s traceback in ``folder/error.txt`` (a member's, ``ensembles/best``, the run's).

        A failure the run survives (a member, the ensembles, the report) is one line on the
        console; the traceback is kept here for whoever debugs it. Writing it never raises: a
        folder that cannot take the file gives None.
        """
        import logging
        import traceback

        path = Path(folder) / ERROR_FILE
        try:
            atomic.write_text(path, "".join(traceback.format_exception(exc)))
        except OSError as err:
            logging.getLogger(__name__).warning("could not write %s (%s)", path, err)
            return None
        return path

    @property
    def report_dir(self) -> Path:
        return self.root / "report"

    # ---- members and ensembles -------------------------------------------------------------------
    @property
    def members_dir(self) -> Path:
        return self.root / "members"

    @property
    def ensembles_dir(self) -> Path:
        return self.root / self._ensembles_name

    def member_dir(self, mid: str) -> Path:
        return self.members_dir / self._folder_name(mid, "member ID")

    def ensemble_dir(self, name: str) -> Path:
        return self.ensembles_dir / self._folder_name(name, "ensemble name")

    def _folder_name(self, name: str, what: str) -> str:
        """``name`` when it names one folder inside the run; a ``--model ../x`` (or an ID in an
        edited config) would reach outside it: a one-line ZoobenchError."""
        text = str(name)
        if text in ("", ".", "..") or any(c in text for c in ("/", "\\", "\0", os.sep)):
            raise ZoobenchError(
                f"{text!r} is not a {what} of run {self.root}: a name that leaves the run "
                "folder is refused"
            )
        return text

    def is_complete(self, path: Path) -> bool:
        return (path / METRICS_JSON).is_file()

    def members(
        self, include_unfinished: bool = False, notes: list[str] | None = None
    ) -> list[Entry]:
        """Stored members, in the order they were finished (unfinished ones last)."""
        return self._entries(self.members_dir, MEMBER, include_unfinished, notes)

    def ensembles(self, notes: list[str] | None = None) -> list[Entry]:
        """Complete ensembles (``ensembles/best`` is a pointer, not one)."""
        return self._entries(self.ensembles_dir, ENSEMBLE, False, notes)

    def member(self, mid: str) -> Entry:
        return self._entry(self.member_dir(mid), MEMBER)

    def ensemble(self, name: str) -> Entry:
        return self._entry(self.ensemble_dir(name), ENSEMBLE)

    def find(self, name: str) -> Entry | None:
        """The complete member (by ID) or ensemble (by name) called ``name``, else None."""
        if name == BEST:
            return None
        places = ((self.members_dir, MEMBER), (self.ensembles_dir, ENSEMBLE))
        prefix, _, rest = str(name).partition("/")
        for folder, kind in places:  # an entry's key, the leaderboard's id: "members/ID"
            if rest and prefix == folder.name:
                name, places = rest, ((folder, kind),)
                break
        name = self._folder_name(name, "member ID or ensemble name")
        for folder, kind in ((f / name, k) for f, k in places):
            if folder.is_dir() and self.is_complete(folder):
                return self._entry(folder, kind)
        return None

    def _entries(
        self, folder: Path, kind: str, include_unfinished: bool, notes: list[str] | None
    ) -> list[Entry]:
        if not folder.is_dir():
            return []
        entries = []
        for path in sorted(p for p in folder.iterdir() if p.is_dir() and p.name != BEST):
            if not (include_unfinished or self.is_complete(path)):
                continue
            try:
                entries.append(self._entry(path, kind))
            except ZoobenchError as exc:
                if notes is None:
                    raise
                notes.append(f"{exc}; it is left out")
        return sorted(entries, key=lambda e: str(e.metrics.get("finished_at", "~")))

    def _entry(self, path: Path, kind: str) -> Entry:
        config_path, metrics_path = path / CONFIG_JSON, path / METRICS_JSON
        if not config_path.is_file():
            raise ZoobenchError(f"{self._rel(path)} has no config.json: not a stored {kind}")
        settings_type = EnsembleConfig if kind == ENSEMBLE else MemberConfig
        try:
            settings = settings_type.from_json(self._read_json(config_path))
            if metrics_path.is_file():
                record = Metrics.from_json(self._read_json(metrics_path))
            else:
                reason = "no metrics.json: running or interrupted"
                record = Metrics(Status.UNFINISHED, reason)
        except TypeError as exc:
            raise ZoobenchError(
                f"{self._rel(path)} holds a config.json or metrics.json that is not a JSON object "
                f"({exc}): it was edited; the next `zoobench run` into this folder redoes it"
            ) from None
        return Entry(path, settings, record, kind)

    def _read_json(self, path: Path) -> Any:
        try:
            return atomic.read_json(path)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ZoobenchError(
                f"{path} is not valid JSON ({exc}): it was cut short or edited; the next "
                "`zoobench run` into this folder repairs what it can"
            ) from None

    def _rel(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)

    # ---- what benchmark.run.robustness writes ---------------------------------------------------------
    def write_robustness(
        self, entry: Entry, record: dict[str, Any], probs: dict[str, np.ndarray] | None = None
    ) -> None:
        """An entry's robustness results: the probabilities (float16) first, the record last, so a
        record on disk always has its probabilities; each file is replaced atomically."""
        if probs:
            with atomic.atomic_path(entry.path / ROBUSTNESS_PROBS) as tmp, open(tmp, "wb") as f:
                np.savez(f, **{k: np.asarray(v, dtype=np.float16) for k, v in probs.items()})
        atomic.write_json(entry.path / ROBUSTNESS_JSON, record)

    # ---- what ensembles write --------------------------------------------------------------------
    @property
    def diversity_json(self) -> Path:
        return self.ensembles_dir / "diversity.json"

    def write_diversity(self, ids: list[str], names: list[str], matrix: np.ndarray) -> None:
        atomic.write_json(
            self.diversity_json,
            {
                "members": ids,
                "names": names,
                "disagreement": np.round(matrix, 6).tolist(),
            },
        )

    def diversity(self) -> tuple[list[str], np.ndarray]:
        """(member names, pairwise disagreement); a ZoobenchError names what is missing or wrong."""
        if not self.diversity_json.is_file():
            raise ZoobenchError("ensembles/diversity.json is missing (no ensembles built yet)")
        data = self._read_json(self.diversity_json)
        try:
            names = [str(n) for n in data.get("names") or data["members"]]
            matrix = np.asarray(data["disagreement"], dtype=float)
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise ZoobenchError(f"ensembles/diversity.json cannot be read ({exc})") from None
        if matrix.shape != (len(names), len(names)):
            raise ZoobenchError(
                f"ensembles/diversity.json has a {matrix.shape} matrix for {len(names)} members"
            )
        return names, matrix

    @property
    def best_dir(self) -> Path:
        return self.ensemble_dir(BEST)

    def best_pointer(self) -> dict[str, Any] | None:
        """ensembles/best/config.json: which entry won and whether a fused model exists."""
        path = self.best_dir / CONFIG_JSON
        return self._read_json(path) if path.is_file() else None

    def clear_best(self) -> None:
        """Remove ``ensembles/best`` (the pointer and its model) before a new one is written."""
        if self.best_dir.exists():
            shutil.rmtree(self.best_dir)

    def save_best_model(self, model) -> dict[str, str]:
        """The best entry's fused model in ``ensembles/best``; its file name and sha256, for the
        pointer (:meth:`write_best_pointer`)."""
        from benchmark.modelfile import save_model

        self.best_dir.mkdir(parents=True, exist_ok=True)
        save_model(model, self.best_dir / MODEL_FILE)
        return {"model": MODEL_FILE, "model_sha256": file_sha256(self.best_dir / MODEL_FILE)}

    def write_best_pointer(self, info: Mapping[str, Any]) -> None:
        """ensembles/best/config.json, written last (after the model it names)."""
        atomic.write_json(self.best_dir / CONFIG_JSON, dict(info))

    @contextlib.contextmanager
    def staged_ensembles(self) -> Iterator[RunStore]:
        """A view of this run whose ensembles go to ``ensembles.new/``, swapped in on success.

        A rebuild that fails half-way leaves the old ``ensembles/`` (and its working best model)
        as it was; a kill between the two renames is undone by :meth:`recover_ensembles`.
        """
        self.recover_ensembles()
        staged = RunStore(self.root, ensembles_name=STAGED)
        if staged.ensembles_dir.exists():
            shutil.rmtree(staged.ensembles_dir)
        staged.ensembles_dir.mkdir(parents=True)
        try:
            yield staged
        except BaseException:
            shutil.rmtree(staged.ensembles_dir, ignore_errors=True)
            raise
        old = self.root / RETIRED
        if self.ensembles_dir.exists():
            os.replace(self.ensembles_dir, old)
        os.replace(staged.ensembles_dir, self.ensembles_dir)
        shutil.rmtree(old, ignore_errors=True)

    def recover_ensembles(self) -> None:
        """Finish or undo an ensembles swap a kill interrupted (``ensembles.old`` / ``.new`` left)."""
        old, new = self.root / RETIRED, self.root / STAGED
        if old.exists() and not self.ensembles_dir.exists():
            os.replace(old, self.ensembles_dir)  # killed between the renames: the old set is whole
        for leftover in (old, new):
            if leftover.exists():
                shutil.rmtree(leftover)

    # ---- writing ---------------------------------------------------------------------------------
    def write_entry(
        self,
        path: Path,
        *,
        config: MemberConfig | EnsembleConfig | Mapping[str, Any],
        metrics: Metrics | Mapping[str, Any],
        val_probs: np.ndarray | None = None,
        test_probs: np.ndarray | None = None,
        history=None,
        model=None,
        stacker: Mapping[str, np.ndarray] | None = None,
    ) -> Entry:
        """Write an entry: its ``model`` (a Keras model, saved atomically) and ``stacker`` arrays
        first, then config.json, the probabilities and history, and ``metrics.json`` last: that
        marks the entry complete. ``finished_at`` is stamped now unless ``metrics`` holds one."""
        from benchmark.formatting import utc_now

        kind = ENSEMBLE if path.parent == self.ensembles_dir else MEMBER
        if isinstance(config, Mapping):
            config = (EnsembleConfig if kind == ENSEMBLE else MemberConfig).from_json(config)
        if isinstance(metrics, Mapping):
            metrics = Metrics.from_json(metrics)
        if metrics.status not in WRITTEN:
            raise ValueError(f"status must be one of {STATUSES}, got {metrics.status.value!r}")
        path.mkdir(parents=True, exist_ok=True)
        if model is not None:
            from benchmark.modelfile import save_model

            save_model(model, path / MODEL_FILE)
        if stacker is not None:
            if not isinstance(config, EnsembleConfig):
                raise ValueError("only an ensemble has a stacker")
            with atomic.atomic_path(path / STACKER_NPZ) as tmp, open(tmp, "wb") as f:
                np.savez(f, **stacker)
            config = dataclasses.replace(
                config, stacker={"file": STACKER_NPZ, **(config.stacker or {})}
            )
        atomic.write_json(path / CONFIG_JSON, config.to_json())
        if val_probs is not None:
            atomic.save_npy(path / "val_probs.npy", np.asarray(val_probs, dtype=np.float32))
        if test_probs is not None:
            atomic.save_npy(path / "test_probs.npy", np.asarray(test_probs, dtype=np.float32))
        if history is not None and len(history):
            with atomic.atomic_path(path / HISTORY_CSV) as tmp:
                history.to_csv(tmp, index=False)
        # What every file hashed to when written: resume, export and predict check it (Entry.verify).
        files = {
            f.name: file_sha256(f)
            for f in sorted(path.iterdir())
            if f.is_file()
            and f.name not in (METRICS_JSON, ERROR_FILE, *POST_HOC)
            and not f.name.startswith(".")
        }
        metrics = dataclasses.replace(
            metrics, files=files, finished_at=metrics.finished_at or utc_now()
        )
        atomic.write_json(path / METRICS_JSON, metrics.to_json())
        return Entry(path, config, metrics, kind)

    def write_calibration(
        self, path: Path, record: dict[str, Any], val_probs: np.ndarray, test_probs: np.ndarray
    ) -> None:
        """An entry's calibration (``ensembles.calibration``): the scaled probabilities first, then
        ``temperature.json`` last with their hashes and those of the entry's own probabilities."""
        for split, probs in (("val", val_probs), ("test", test_probs)):
            atomic.save_npy(path / CALIBRATED_PROBS[split], np.asarray(probs, dtype=np.float32))
        source = {f"{s}_probs.npy": file_sha256(path / f"{s}_probs.npy") for s in ("val", "test")}
        files = {name: file_sha256(path / name) for name in CALIBRATED_PROBS.values()}
        atomic.write_json(path / CALIBRATION_JSON, {**record, "source": source, "files": files})

    def clear_calibration(self, path: Path) -> None:
        """Remove an entry's calibration (the record first: no half-removed one reads as valid)."""
        (path / CALIBRATION_JSON).unlink(missing_ok=True)
        for name in CALIBRATED_PROBS.values():
            (path / name).unlink(missing_ok=True)

    def write_train_probs(self, path: Path, probs: np.ndarray) -> None:
        """A boosting round's probabilities on the training split (``benchmark.train.boosting``: the
        next round's weights come from them). Call before :meth:`write_entry`, which hashes them."""
        path.mkdir(parents=True, exist_ok=True)
        atomic.save_npy(path / "train_probs.npy", np.asarray(probs, dtype=np.float32))

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
                    if p.is_dir() and not self.is_complete(p) and p != self.best_dir
                )

    # ---- refits on train + validation (benchmark.run.refit): outside the leaderboard ----------------
    def refit_dir(self, name: str) -> Path:
        return self.root / "refit" / name

    def refit_model_path(self, name: str, mid: str) -> Path:
        return self.refit_dir(name) / f"{mid}.keras"

    def save_refit_model(self, name: str, mid: str, model) -> None:
        """A refit member's model (before :meth:`write_refit`, which hashes it)."""
        from benchmark.modelfile import save_model

        save_model(model, self.refit_model_path(name, mid))

    def write_refit(self, name: str, record: dict[str, Any], test_probs: np.ndarray) -> None:
        """``refit/NAME/refit.json`` last (after the models and test probabilities): it marks the
        refit complete and records every file's hash."""
        folder = self.refit_dir(name)
        atomic.save_npy(folder / "test_probs.npy", np.asarray(test_probs, dtype=np.float32))
        files = {
            f.name: file_sha256(f)
            for f in sorted(folder.iterdir())
            if f.is_file() and f.suffix in (".keras", ".npy")
        }
        atomic.write_json(folder / "refit.json", {**record, "files": files})

    def read_refit(self, name: str) -> dict[str, Any] | None:
        """A complete refit's record (None when there is none); damaged files are a ZoobenchError."""
        path = self.refit_dir(name) / "refit.json"
        if not path.is_file():
            return None
        record = self._read_json(path)
        folder = self.refit_dir(name)
        for fname, expected in (record.get("files") or {}).items():
            if not (folder / fname).is_file() or file_sha256(folder / fname) != expected:
                raise ZoobenchError(
                    f"{folder / fname} is missing or changed since the refit wrote it: "
                    "run the refit again"
                )
        return record

    def refit_test_probs(self, name: str) -> np.ndarray:
        return np.load(self.refit_dir(name) / "test_probs.npy", allow_pickle=False)

    def refits(self) -> list[str]:
        """Names of the complete refits, sorted."""
        folder = self.root / "refit"
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if (p / "refit.json").is_file())
