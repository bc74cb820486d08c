"""Does JPEG deblocking help? One fast zoo member trained with and without the ``deblock`` step.

Usage:
    python scripts/bench_deblocking.py --data-dir ../shared/data/cifar10-jpg \
        [--arch fastnet] [--train 5000 --val 1000 --test 2000] [--epochs 4] [--seed 0]

Both arms see the same stratified subset of the CIFAR-10 JPEG copy (its pictures are JPEG quality
75), the same seed, the same model, training settings and flips, with TensorFlow's op determinism
on, so the one difference is ``preprocess = [{ name = "deblock" }]`` applied to train, validation and
test alike (as a member's recorded steps are at predict). Training goes through
``benchmark.train.training.fit``, the runner's own routine (Adam 2e-3, batch 128, fixed epochs, no early
stopping); the test split is scored once per arm at the end. Prints both test accuracies, their
difference and the data source. One seed on a few thousand images: a difference under about one
point (a binomial standard error of ~1 point on 2,000 test images) is noise.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "cifar10-jpg"


def run_arm(data, steps: list[dict], args: argparse.Namespace) -> dict:
    """Preprocess every split with ``steps``, train ``args.arch``, score the test split once."""
    import keras

    import zoo
    from benchmark.config.schema import resolve_training
    from benchmark.data.preprocess import apply_steps, blockiness
    from benchmark.store.inference import probabilities
    from benchmark.train.training import evaluate_probs, fit
    from zoo import backend

    start = time.perf_counter()
    x_train, x_val, x_test = (
        apply_steps(x, steps) if steps else x for x in (data.x_train, data.x_val, data.x_test)
    )
    preprocess_seconds = time.perf_counter() - start
    keras.backend.clear_session()
    backend.enable_determinism()
    keras.utils.set_random_seed(args.seed)
    model = zoo.build(args.arch, num_classes=data.num_classes)
    training = resolve_training(
        {
            "epochs": args.epochs,
            "batch_size": 128,
            "optimizer": "adam",
            "learning_rate": 2e-3,
            "early_stopping_patience": 0,
        }
    )
    result = fit(
        model,
        x_train,
        data.y_train,
        x_val,
        data.y_val,
        training,
        num_classes=data.num_classes,
        augment=[{"name": "flip"}],
        seed=args.seed,
    )
    if not result.ok:
        raise SystemExit(f"training failed: {result.failed_reason}")
    probs = probabilities(result.model, x_test)
    return {
        "test_accuracy": evaluate_probs(probs, data.y_test)["accuracy"],
        "val_accuracy": float(result.history["val_accuracy"].iloc[-1]),
        "train_seconds": result.train_seconds,
        "preprocess_seconds": preprocess_seconds,
        "blockiness": blockiness(x_train),
        "changed": float((x_train != data.x_train).any(axis=-1).mean()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--arch", default="fastnet")
    parser.add_argument("--train", type=int, default=5000)
    parser.add_argument("--val", type=int, default=1000)
    parser.add_argument("--test", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    from tabulate import tabulate

    from benchmark.data.datasets import load

    data = load(
        "cifar10",
        data_dir=args.data_dir,
        seed=args.seed,
        train_size=args.train,
        val_size=args.val,
        test_size=args.test,
    )
    arms = {"none": [], "deblock": [{"name": "deblock"}]}
    results = {name: run_arm(data, steps, args) for name, steps in arms.items()}
    rows = [
        [
            name,
            f"{r['test_accuracy']:.4f}",
            f"{r['val_accuracy']:.4f}",
            f"{r['blockiness']:.2f}",
            f"{r['changed']:.1%}",
            f"{r['preprocess_seconds']:.1f}",
            f"{r['train_seconds']:.0f}",
        ]
        for name, r in results.items()
    ]
    print(
        tabulate(
            rows,
            tablefmt="github",
            headers=[
                "preprocess",
                "test accuracy",
                "val accuracy",
                "train blockiness",
                "pixels changed",
                "preprocess s",
                "train s",
            ],
        )
    )
    diff = results["deblock"]["test_accuracy"] - results["none"]["test_accuracy"]
    print(
        f"\ndeblock - none: {diff * 100:+.2f} points of test accuracy "
        f"({len(data.x_test)} test images)"
    )
    print(
        f"data: {data.source} at {data.location}; {len(data.x_train)} train / {len(data.x_val)} "
        f"val / {len(data.x_test)} test, seed {args.seed}; {args.arch}, {args.epochs} epochs, "
        "Adam 2e-3, batch 128, flips"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
