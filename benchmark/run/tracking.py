"""A finished run in MLflow (``zoobench run PROFILE --mlflow URI``): the team's tracking server sees
every benchmark beside their other experiments.

The run store stays the source of truth; this copies it out once the leaderboard is scored. The
benchmark is one parent run (experiment ``zoobench <profile>``, named after the run folder) with
the resolved profile as params and the leaderboard, report and ``run.json`` as artifacts; each
leaderboard row (member or ensemble) is a child run with its config as params, its history as
per-epoch metrics (step = epoch), its final validation and test figures, and its small text files
(config, metrics, history, calibration and robustness records) as artifacts.

Logged once: the parent is found again by the run folder's identity (tag ``zoobench.identity``),
a child by its entry (``members/ID``, ``ensembles/NAME``) and the hash of its stored files (tag
``zoobench.digest``). A rerun that keeps members logs nothing new for them; a member retrained
after damage, or an ensemble that came out different, is a new child. Done from the store after
the run rather than live from training, so a killed or resumed run, or one whose members trained
on Ray workers, is logged the same way.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from benchmark.errors import ZoobenchError, short_error
from benchmark.store.runstore import RunStore

log = logging.getLogger(__name__)

INSTALL = "pip install 'zoobench[mlflow]'"
TAG_IDENTITY = "zoobench.identity"  # the run folder's identity hash (run.json)
TAG_ENTRY = "zoobench.entry"  # members/ID | ensembles/NAME
TAG_DIGEST = "zoobench.digest"  # sha256 of the entry's stored files' hashes
TAG_FOLDER = "zoobench.folder"
PARAM_VALUE_CHARS = 6000  # MLflow's limit on a param's value
BATCH = 900  # metrics a log_batch call (MLflow accepts 1,000)
PARAMS_BATCH = 90  # params a log_batch call (MLflow accepts 100)
# Leaderboard columns that are text or bookkeeping, not figures to log.
NOT_FIGURES = {
    "rank",
    "model",
    "kind",
    "method",
    "architecture",
    "strategy",
    "status",
    "reason",
    "id",
}
TEXT_ARTIFACTS = (".json", ".csv")  # an entry's small text files (config, metrics, history, ...)


def _import_mlflow():
    try:
        import mlflow  # noqa: F401 - its presence is the check
        from mlflow.tracking import MlflowClient
    except ImportError as exc:
        raise ZoobenchError(f"--mlflow needs MLflow, which is not installed ({INSTALL})") from exc
    return MlflowClient


class Tracker:
    """Logs runs to the MLflow tracking store at ``uri``; checked when made, so a wrong URI is one
    line before anything trains."""

    def __init__(self, uri: str):
        client_cls = _import_mlflow()
        self.uri = uri
        try:
            self.client = client_cls(tracking_uri=uri)
            self.client.search_experiments(max_results=1)
        except Exception as exc:  # noqa: BLE001 - MLflow raises many kinds; the user needs one line
            raise ZoobenchError(
                f"--mlflow {uri}: no MLflow tracking store there ({short_error(exc)})"
            ) from exc

    # ---- the parent ------------------------------------------------------------------------------
    def experiment(self, name: str) -> str:
        """The experiment's id, made on first use; a local store (sqlite, a folder) keeps artifacts
        beside it in ``mlartifacts/`` instead of the working directory's ``mlruns/``."""
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        return self.client.create_experiment(name, artifact_location=self._artifact_location())

    def _artifact_location(self) -> str | None:
        parsed = urlparse(self.uri)
        if parsed.scheme == "sqlite":
            db = Path(self.uri.removeprefix("sqlite:///")).expanduser()
            return (db.resolve().parent / "mlartifacts").as_uri()
        if parsed.scheme in ("", "file"):
            return None  # a file store keeps artifacts in its own folder
        return None  # a server decides

    def log_run(self, store: RunStore, board, report: Path | None = None) -> str:
        """Log ``store``'s run and ``board`` (its scored leaderboard); returns what was logged."""
        from mlflow.entities import RunStatus

        meta = store.read_run()
        identity = str((meta.get("identity") or {}).get("hash") or store.root.resolve())
        profile = meta.get("profile") or {}
        experiment = self.experiment(f"zoobench {profile.get('name') or store.root.name}")
        parent = self._find(experiment, f"tags.`{TAG_IDENTITY}` = '{identity}'")
        if parent is None:
            parent = self.client.create_run(
                experiment,
                run_name=store.root.name,
                tags={TAG_IDENTITY: identity, TAG_FOLDER: str(store.root.resolve())},
            ).info.run_id
            params = {"seed": meta.get("seed"), "backend": meta.get("backend")}
            params.update(flatten({"profile": profile, "data": meta.get("data") or {}}))
            self._log(parent, params=params)
        else:
            self.client.update_run(parent, status=RunStatus.to_string(RunStatus.RUNNING))
        logged = {
            r.data.tags.get(TAG_ENTRY): r.data.tags.get(TAG_DIGEST)
            for r in self._children(experiment, parent)
        }
        new = kept = 0
        entries = {e.key: e for e in [*store.members(notes=[]), *store.ensembles(notes=[])]}
        for _, row in board.iterrows():
            entry = entries.get(str(row["id"]))
            if entry is None:
                continue
            digest = entry_digest(entry)
            if logged.get(entry.key) == digest:
                kept += 1
                continue
            self._log_entry(experiment, parent, entry, row, digest)
            new += 1
        figures = {"wall_seconds": meta.get("wall_seconds"), "entries": len(board)}
        if len(board):
            best = board.iloc[0]
            figures.update(
                {f"best_{k}": best.get(k) for k in ("val_accuracy", "test_accuracy", "val_loss")}
            )
        self._log(parent, metrics=figures)
        self._artifacts(parent, store, report)
        self.client.set_terminated(parent, "FINISHED")
        return (
            f"{new} runs logged, {kept} already there, under parent {parent} "
            f"(experiment {experiment}) at {self.uri}"
        )

    def _find(self, experiment: str, where: str) -> str | None:
        runs = self.client.search_runs([experiment], filter_string=where, max_results=1)
        return runs[0].info.run_id if runs else None

    def _children(self, experiment: str, parent: str) -> Iterator:
        token = None
        while True:
            page = self.client.search_runs(
                [experiment],
                filter_string=f"tags.`mlflow.parentRunId` = '{parent}'",
                max_results=1000,
                page_token=token,
            )
            yield from page
            token = page.token
            if not token:
                return

    # ---- the children ------------------------------------------------------------------------------
    def _log_entry(self, experiment: str, parent: str, entry, row, digest: str) -> None:
        run = self.client.create_run(
            experiment,
            run_name=entry.name,
            tags={
                "mlflow.parentRunId": parent,
                TAG_ENTRY: entry.key,
                TAG_DIGEST: digest,
                "zoobench.kind": "ensemble" if entry.is_ensemble else "member",
                "zoobench.status": entry.status,
            },
        ).info.run_id
        self._log(run, params=flatten(entry.config))
        self._log(
            run,
            metrics={k: row[k] for k in row.index if k not in NOT_FIGURES},
            steps=history_metrics(entry.history()),
        )
        for path in sorted(entry.path.iterdir()):  # not the model or the arrays: the store has them
            if path.is_file() and path.suffix in TEXT_ARTIFACTS:
                self.client.log_artifact(run, str(path))
        self.client.set_terminated(run, "FINISHED" if entry.status == "done" else "FAILED")

    def _artifacts(self, parent: str, store: RunStore, report: Path | None) -> None:
        for path in (store.leaderboard_csv, store.run_json):
            if path.is_file():
                self.client.log_artifact(parent, str(path))
        folder = report.parent if report is not None else None
        if folder is not None and folder.is_dir():
            self.client.log_artifacts(parent, str(folder), artifact_path="report")

    def _log(
        self,
        run: str,
        *,
        params: dict[str, Any] | None = None,
        metrics: dict[str, Any] | None = None,
        steps: list[tuple[str, float, int]] | None = None,
    ) -> None:
        """Params and metrics in batches; values that are not finite numbers are left out."""
        import time

        from mlflow.entities import Metric, Param

        now = int(time.time() * 1000)
        plist = [Param(k[:250], str(v)[:PARAM_VALUE_CHARS]) for k, v in (params or {}).items()]
        mlist = [
            Metric(_metric_name(k), float(v), now, 0)
            for k, v in (metrics or {}).items()
            if _finite(v)
        ]
        mlist += [Metric(_metric_name(k), v, now, step) for k, v, step in steps or []]
        for i in range(0, len(plist), PARAMS_BATCH):
            self.client.log_batch(run, params=plist[i : i + PARAMS_BATCH])
        for i in range(0, len(mlist), BATCH):
            self.client.log_batch(run, metrics=mlist[i : i + BATCH])


def entry_digest(entry) -> str:
    """What an entry's stored files hashed to, as one hash: equal digests, the same entry."""
    files = entry.metrics.get("files") or {}
    text = json.dumps(files or entry.metrics, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config as MLflow params: ``{"training.epochs": 10, "hp.width": 0.5}``; a list of
    tables is numbered (``members.0.name``), any other list is one JSON value."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}{k}." if prefix or k else ""))
        return out
    key = prefix.rstrip(".")
    if isinstance(value, list | tuple) and value and all(isinstance(v, dict) for v in value):
        out = {}
        for i, v in enumerate(value):  # the profile's members: members.0.architecture, ...
            out.update(flatten(v, f"{key}.{i}."))
        return out
    if isinstance(value, list | tuple):
        return {key: json.dumps(value, default=str)}
    return {key: value}


def history_metrics(history) -> list[tuple[str, float, int]]:
    """(name, value, epoch) for every numeric cell of a member's history.csv."""
    if history is None or not len(history):
        return []
    out = []
    for i, (_, row) in enumerate(history.iterrows()):
        step = int(row["epoch"]) if _finite(row.get("epoch")) else i
        for col, value in row.items():
            if col != "epoch" and _finite(value):
                out.append((str(col), float(value), step))
    return out


def _finite(value: Any) -> bool:
    try:
        return not isinstance(value, bool | str) and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _metric_name(name: str) -> str:
    """MLflow's metric names: letters, digits, ``_ - . / `` and spaces."""
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in str(name))[:250]
