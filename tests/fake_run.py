"""A run store with synthetic members: probabilities with known accuracies, no training needed.

Ensembles and reports read only the store, so their tests build one of these in a temp folder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.store.runstore import RunStore

CLASS_NAMES = tuple(f"class{i}" for i in range(10))


def noisy_probs(
    labels: np.ndarray, accuracy: float, num_classes: int, rng: np.random.Generator
) -> np.ndarray:
    """Probabilities whose argmax is right on about ``accuracy`` of the rows."""
    n = len(labels)
    correct = rng.random(n) < accuracy
    wrong = (labels + rng.integers(1, num_classes, size=n)) % num_classes
    predicted = np.where(correct, labels, wrong)
    logits = rng.normal(0.0, 1.0, size=(n, num_classes))
    logits[np.arange(n), predicted] += 3.0
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (probs / probs.sum(axis=1, keepdims=True)).astype(np.float32)


def make_fake_run(
    root: Path,
    accuracies: tuple[float, ...] = (0.85, 0.8, 0.7, 0.6),
    n_val: int = 300,
    n_test: int = 400,
    num_classes: int = 10,
    seed: int = 0,
    failed: bool = True,
) -> RunStore:
    """A complete run folder: run.json, data/, one member per accuracy (plus a failed one)."""
    rng = np.random.default_rng(seed)
    store = RunStore(root)
    y_val = np.arange(n_val) % num_classes
    y_test = np.arange(n_test) % num_classes
    x_test = rng.integers(0, 256, size=(n_test, 32, 32, 3), dtype=np.uint8)
    store.save_array("y_val", y_val.astype(np.int64))
    store.save_array("y_test", y_test.astype(np.int64))
    store.save_array("x_test", x_test)
    store.save_array("sample_x", x_test[:25])
    store.save_array("sample_y", y_test[:25].astype(np.int64))
    store.write_run(
        {
            "name": root.name,
            "profile": {"name": "fake"},
            "seed": seed,
            "data": {
                "dataset": "cifar10",
                "source": "synthetic probabilities",
                "class_names": list(CLASS_NAMES[:num_classes]),
                "sizes": {"train": 1000, "val": n_val, "test": n_test},
            },
            "versions": {},
            "machine": {"cpu_count": 2, "gpu": "none"},
        }
    )
    for i, acc in enumerate(accuracies):
        mid = f"member{i:02d}"
        epochs = 5
        history = pd.DataFrame(
            {
                "epoch": np.arange(epochs),
                "loss": np.linspace(2.0, 1.0 - acc / 2, epochs),
                "accuracy": np.linspace(0.2, acc, epochs),
                "val_loss": np.linspace(2.1, 1.1 - acc / 2, epochs),
                "val_accuracy": np.linspace(0.2, acc - 0.02, epochs),
            }
        )
        val_probs = noisy_probs(y_val, acc, num_classes, rng)
        test_probs = noisy_probs(y_test, acc, num_classes, rng)
        store.write_entry(
            store.member_dir(mid),
            config={
                "id": mid,
                "name": f"net{i}",
                "architecture": f"net{i}",
                "kind": "scratch",
                "family": "fake",
                "strategy": None,
                "input_size": 32,
                "hp": {},
                "seed": seed,
            },
            metrics={
                "status": "done",
                "reason": "",
                "val_accuracy": float((val_probs.argmax(1) == y_val).mean()),
                "val_loss": 1.0,
                "params": 1000 * (i + 1),
                "flops": 10_000 * (i + 1),
                "train_seconds": 10.0 * (i + 1),
                "epochs": epochs,
                "inference_images_per_second": 1000.0 / (i + 1),
                "finished_at": f"2026-01-01T00:00:{i:02d}Z",
            },
            val_probs=val_probs,
            test_probs=test_probs,
            history=history,
        )
    if failed:
        store.write_entry(
            store.member_dir("member99"),
            config={
                "id": "member99",
                "name": "broken",
                "architecture": "broken",
                "kind": "scratch",
            },
            metrics={
                "status": "failed",
                "reason": "loss became NaN at epoch 1",
                "finished_at": "2026-01-01T00:01:00Z",
            },
        )
    return store
