"""Where a run's numbers came from: run.json (profile, seed, data, backend, versions, machine) and the
data arrays the report and the ensembles read, plus the check that a folder holds this same run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from typing import Any

import numpy as np

from benchmark.config.profiles import Profile
from benchmark.errors import ZoobenchError
from benchmark.formatting import utc_now
from benchmark.store.records import RunRecord
from benchmark.store.runstore import RunStore
from zoo import backend

log = logging.getLogger(__name__)


def identity(profile: Profile, seed: int, data) -> dict[str, Any]:
    """What a run is: the resolved profile's members and data, the seed and split, the data.

    Two runs with the same identity may share a folder (a rerun resumes); any difference is
    refused, so members of different profiles or splits are never ensembled together. The budget,
    ``[ensembles]`` and ``[report]`` are not part of it: every run rebuilds its ensembles and
    report whole from the members, so changing them between reruns mixes nothing.
    """
    resolved = {
        "name": profile.name,
        "deterministic": profile.deterministic,
        "data": profile.data,
        "members": [dataclasses.asdict(m) for m in profile.members],
    }
    parts = {
        "profile": _digest(resolved),
        "seed": seed,
        "split": {**data.split, "sizes": [len(data.y_train), len(data.y_val), len(data.y_test)]},
        "data": data.fingerprint,
    }
    return {"hash": _digest(parts), **parts}


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def recorded_identity(store: RunStore) -> dict[str, Any] | None:
    """The identity run.json records, else the marker's copy (run.json torn or from before)."""
    from benchmark.store import runfolder

    try:
        previous = store.run_record()
    except ZoobenchError:
        previous = None
    return (previous and previous.identity) or runfolder.read_marker(store.root).get("identity")


def check_identity(store: RunStore, profile: Profile, seed: int, data) -> dict[str, Any]:
    """This run's identity; a folder holding a run with another one is refused, naming what differs."""
    mine = identity(profile, seed, data)
    before = recorded_identity(store)
    if before is None:
        _check_legacy(store, profile, seed, data)
        return mine
    if before["hash"] != mine["hash"]:
        what = {
            "profile": "the profile's settings",
            "seed": "the seed",
            "split": "the split",
            "data": "the data",
        }
        differs = [text for key, text in what.items() if before.get(key) != mine.get(key)]
        raise ZoobenchError(
            f"{store.root} holds another run (it differs in {', '.join(differs) or 'its identity'}): "
            "use --fresh to start over there, or another --out"
        )
    return mine


def _check_legacy(store: RunStore, profile: Profile, seed: int, data) -> None:
    """Runs from before identities: the profile name, seed and data fingerprint must match."""
    try:
        previous = store.run_record()
    except ZoobenchError:
        return  # torn and without a marker: nothing left to compare; members are content-addressed
    if previous is None or not previous.to_json():  # none, or an empty object
        return
    before = (previous.profile_name, previous.seed)
    if before != (profile.name, seed):
        raise ZoobenchError(
            f"{store.root} holds a run of profile {before[0]!r} seed {before[1]}; this is "
            f"{profile.name!r} seed {seed}: use --fresh to start over or another --out"
        )
    fingerprint = (previous.data or {}).get("fingerprint")
    if fingerprint and fingerprint != data.fingerprint:
        raise ZoobenchError(f"{store.root} was run on other data ({fingerprint}); use --fresh")


def run_record(
    store: RunStore,
    profile: Profile,
    seed: int,
    data,
    *,
    budget_seconds: float | None,
    started_at: str,
    wall_seconds: float | None,
    strategy: str | None,
) -> RunRecord:
    """run.json's content; ``wall_seconds`` None while the run goes on."""
    finished = wall_seconds is not None
    return RunRecord(
        name=store.root.name,
        identity=identity(profile, seed, data),
        profile=profile.to_json(),
        seed=seed,
        data=data.summary(),
        backend=backend.name(),
        versions=backend.versions(),
        machine=backend.describe(),
        budget_seconds=budget_seconds,
        started_at=started_at,
        finished_at=utc_now() if finished else None,
        wall_seconds=round(wall_seconds, 2) if finished else None,
        deterministic=profile.deterministic,
        strategy=strategy,
    )


def write_data_arrays(store: RunStore, data, seed: int) -> None:
    """Labels and test images for scoring and export, and 25 seeded training pictures for the grid."""
    arrays = {"y_val": data.y_val, "y_test": data.y_test, "x_test": data.x_test}
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(data.y_train), size=min(25, len(data.y_train)), replace=False))
    arrays.update(sample_x=data.x_train[pick], sample_y=data.y_train[pick])
    for name, array in arrays.items():
        if store.has_array(name):
            try:
                if np.array_equal(store.load_array(name), array):
                    continue
            except (OSError, ValueError):
                pass
            log.warning("data/%s.npy did not hold this run's data (damaged?): rewritten", name)
        store.save_array(name, array)
