"""Where a run's numbers came from: run.json (profile, seed, data, backend, versions, machine) and the
data arrays the report and the ensembles read, plus the check that a folder holds this same run.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np

from benchmark.errors import ZoobenchError
from benchmark.profiles import Profile
from benchmark.store import RunStore
from zoo import backend


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_same_run(store: RunStore, profile: Profile, seed: int, data) -> None:
    """A folder holding another profile, seed or data is refused: results are never mixed."""
    previous = store.read_run()
    if not previous:
        return
    before = (previous.get("profile", {}).get("name"), previous.get("seed"))
    if before != (profile.name, seed):
        raise ZoobenchError(
            f"{store.root} holds a run of profile {before[0]!r} seed {before[1]}; this is "
            f"{profile.name!r} seed {seed}: use --fresh to start over or another --out"
        )
    fingerprint = previous.get("data", {}).get("fingerprint")
    if fingerprint and fingerprint != data.fingerprint:
        raise ZoobenchError(f"{store.root} was run on other data ({fingerprint}); use --fresh")


def run_record(
    store: RunStore, profile: Profile, seed: int, data, *, budget_seconds: float | None,
    started_at: str, wall_seconds: float | None, strategy: str | None,
) -> dict[str, Any]:  # fmt: skip
    """run.json's content; ``wall_seconds`` None while the run goes on."""
    finished = wall_seconds is not None
    return {
        "name": store.root.name,
        "profile": profile.to_json(),
        "seed": seed,
        "data": data.summary(),
        "backend": backend.name(),
        "versions": backend.versions(),
        "machine": backend.describe(),
        "budget_seconds": budget_seconds,
        "started_at": started_at,
        "finished_at": now() if finished else None,
        "wall_seconds": round(wall_seconds, 2) if finished else None,
        "deterministic": profile.deterministic,
        "strategy": strategy,
    }


def write_data_arrays(store: RunStore, data, seed: int) -> None:
    """Labels and test images for scoring and export, and 25 seeded training pictures for the grid."""
    arrays = {"y_val": data.y_val, "y_test": data.y_test, "x_test": data.x_test}
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(data.y_train), size=min(25, len(data.y_train)), replace=False))
    arrays.update(sample_x=data.x_train[pick], sample_y=data.y_train[pick])
    for name, array in arrays.items():
        if not store.has_array(name):
            store.save_array(name, array)
