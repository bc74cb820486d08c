"""Helpers for the report tests: a fake run with an ensemble and diversity.json (no tests here).

Kept beside the tests rather than in tests/fake_run.py so the shared fake store's signature and
behaviour stay exactly as the ensembles tests expect.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from fake_run import make_fake_run

from benchmark import atomic
from benchmark.store.runstore import RunStore


def add_fake_ensemble(store: RunStore, name: str = "average", members: int = 3) -> str:
    """Average the top ``members`` stored members into ``ensembles/NAME`` and write diversity.json."""
    entries = sorted((e for e in store.members() if e.ok), key=lambda e: -e.metrics["val_accuracy"])
    chosen = entries[:members]
    y_val = store.labels("val")
    val_probs = np.mean([e.probs("val") for e in chosen], axis=0)
    test_probs = np.mean([e.probs("test") for e in chosen], axis=0)
    store.write_entry(
        store.ensemble_dir(name),
        config={
            "name": f"{name} of {len(chosen)}",
            "method": name,
            "members": [e.id for e in chosen],
            "weights": [1 / len(chosen)] * len(chosen),
            "params": {},
        },
        metrics={
            "status": "done",
            "reason": "",
            "val_accuracy": float((val_probs.argmax(1) == y_val).mean()),
            "params": int(sum(e.metrics["params"] for e in chosen)),
            "flops": int(sum(e.metrics["flops"] for e in chosen)),
            "train_seconds": float(sum(e.metrics["train_seconds"] for e in chosen)),
            "inference_images_per_second": 150.0,
            "finished_at": "2026-01-01T00:02:00Z",
        },
        val_probs=val_probs,
        test_probs=test_probs,
    )
    preds = np.stack([e.probs("val").argmax(1) for e in entries])
    disagreement = (preds[:, None, :] != preds[None, :, :]).mean(axis=2)
    atomic.write_json(
        store.ensembles_dir / "diversity.json",
        {
            "members": [e.id for e in entries],
            "names": [e.name for e in entries],
            "disagreement": disagreement.tolist(),
        },
    )
    return f"ensembles/{name}"


def full_fake_run(root: Path) -> RunStore:
    """A finished fake run: four members, a failed one, an averaging ensemble, diversity.json."""
    store = make_fake_run(root)
    add_fake_ensemble(store)
    meta = store.read_run()
    meta.update(
        {
            "budget_seconds": 1800,
            "wall_seconds": 95.5,
            "started_at": "2026-01-01T00:00:00Z",
            "finished_at": "2026-01-01T00:03:00Z",
            "versions": {"python": "3.11", "tensorflow": "2.21"},
        }
    )
    store.write_run(meta)
    return store
