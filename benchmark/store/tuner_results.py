"""A run's Keras Tuner searches after the fact: every trial's hyperparameters and score.

Keras Tuner's ``results_summary()`` prints from a live tuner; a finished run has only the
projects on disk (``<run>/tuner/<project>/trial_*/trial.json``), so this reads them back with
Keras Tuner's own ``Trial.load`` into one pandas table, and names each search after the profile
member it tuned (feature extraction's head searches are named ``head: <member>``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from benchmark.errors import ZoobenchError
from benchmark.store.runstore import RunStore

log = logging.getLogger(__name__)

TRIAL_STATE = "trial.json"  # Keras Tuner's file in each trial folder
COLUMNS = ("search", "project", "trial", "status", "score", "best_step", "hyperparameters")


def _search_names(store: RunStore) -> dict[str, str]:
    """Project folder -> the member it tuned (from the members' recorded ``tuner.project``)."""
    names = {}
    for member in store.members():
        project = (member.config.get("tuner") or {}).get("project")
        if project:
            names[project] = str(member.config.get("name", "")).split(" [top ")[0]
    return names


def _label(project: str, names: dict[str, str]) -> str:
    if project in names:
        return names[project]
    if project.startswith("head-"):
        return f"head: {project[len('head-') :].rsplit('-', 1)[0]}"
    return project.rsplit("-", 1)[0]


def tuner_results(run_dir: str | Path):
    """Every trial of every search in the run, best first within each search (a DataFrame)."""
    import pandas as pd
    from keras_tuner.engine.trial import Trial

    store = RunStore(run_dir)
    if not store.exists():
        raise ZoobenchError(f"unknown run {run_dir}: no run.json there (see `zoobench run`)")
    names = _search_names(store)
    rows: list[dict[str, Any]] = []
    root = store.tuner_dir
    projects = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    for project in projects:
        for state in sorted(project.glob(f"trial_*/{TRIAL_STATE}")):
            try:
                trial = Trial.load(str(state))
            except (OSError, ValueError, KeyError) as exc:
                log.warning("tuner results: %s is unreadable (%s); left out", state, exc)
                continue
            rows.append(
                {
                    "search": _label(project.name, names),
                    "project": project.name,
                    "trial": trial.trial_id,
                    "status": str(trial.status),
                    "score": trial.score,
                    "best_step": trial.best_step,
                    "hyperparameters": dict(trial.hyperparameters.values),
                }
            )
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    if len(table):
        table = table.sort_values(
            ["search", "score"], ascending=[True, False], na_position="last", kind="stable"
        ).reset_index(drop=True)
    return table


def best_hyperparameters(run_dir: str | Path) -> dict[str, dict[str, dict[str, Any]]]:
    """Each search's best completed trial: ``{"hp": architecture values, "training": settings}``
    (the profile's names; Keras Tuner's own ``tuner/*`` bookkeeping left out)."""
    from benchmark.tune.tuning import split_values

    table = tuner_results(run_dir)
    best = {}
    for search, rows in table[table["status"] == "COMPLETED"].groupby("search", sort=True):
        arch, training = split_values(rows.iloc[0]["hyperparameters"])  # sorted best first
        best[search] = {"hp": arch, "training": training}
    return best
