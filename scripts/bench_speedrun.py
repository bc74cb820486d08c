"""Train a zoo net with its speed-record recipe through zoobench's own pipeline, and time it.

For each epoch count asked for, a fresh member (``benchmark.train.training.fit``: the whitening
layer adapted from the training images, the recipe's optimizer, schedule, weight averaging,
alternating flips and translate) is trained on the training split, then scored on the validation
split and, once at the end, on the test split, with and without the recipe's test-time views. The
wall time is split into the first epoch (graph building / compiling included) and the steady epochs
after it; images/s is the steady rate. Choose settings by the validation column; the test column
is printed for the record.

    python scripts/bench_speedrun.py --architecture fastnet --epochs 4
    python scripts/bench_speedrun.py --architecture airbench94 --epochs 10 --seeds 0 1 2 \\
        --backend jax                       # on a GPU: the recipe's batch of 1,024 and bf16
    python scripts/bench_speedrun.py --architecture fastnet --epochs 4 --set batch_size=256 \\
        --set learning_rate=0.375            # a variant of the recipe (values parsed as TOML)

With ``--record NAME`` the table is written to docs/results/<NAME>.json (and .md) with the commit,
machine and command (``scripts/results_io.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--architecture", default="fastnet")
    parser.add_argument("--recipe", default=None, help="default: the architecture's own")
    parser.add_argument("--epochs", type=int, nargs="+", default=[4])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a training option"
    )
    parser.add_argument(
        "--data-dir",
        default=os.environ.get("ZOOBENCH_DATA", str(REPO.parent / "shared/data/cifar10-jpg")),
    )
    parser.add_argument("--train-size", type=int, default=None, help="default: the full 45,000")
    parser.add_argument("--backend", default=None, help="tensorflow, jax or torch")
    parser.add_argument(
        "--verbose", action="store_true", help="one line an epoch (Keras's verbose=2)"
    )
    parser.add_argument("--record", default=None, help="write docs/results/<NAME>.json and .md")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.backend:
        os.environ["KERAS_BACKEND"] = args.backend
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    import keras
    import numpy as np

    import zoo
    from benchmark import metrics
    from benchmark.config.recipes import recipe
    from benchmark.config.schema import resolve_training
    from benchmark.data.datasets import load
    from benchmark.train import training as train
    from zoo.index import recipe_of
    from zoo.record_layers import with_test_time_views

    name = args.recipe or recipe_of(args.architecture)
    found = recipe(name)
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key.strip()] = tomllib.loads(f"v = {value}")["v"]
    data = load("cifar10", data_dir=args.data_dir, seed=0, train_size=args.train_size)
    source = data.source
    print(
        f"{args.architecture} with recipe {name} on {keras.backend.backend()}; "
        f"train {len(data.y_train)} / val {len(data.y_val)} / test {len(data.y_test)} ({source})"
    )
    rows = []
    for epochs in args.epochs:
        for seed in args.seeds:
            options = resolve_training(
                {**found["training"], **overrides, "epochs": epochs, "recipe": name}
            )
            keras.backend.clear_session()
            keras.utils.set_random_seed(seed)
            with train.precision_scope(options["precision"]) as policy:
                model = zoo.build(args.architecture, input_shape=data.x_train.shape[1:])
                result = train.fit(
                    model,
                    data.x_train,
                    data.y_train,
                    data.x_val,
                    data.y_val,
                    options,
                    num_classes=data.num_classes,
                    augment=found["augment"],
                    seed=seed,
                    epochs=epochs,
                    verbose=2 if args.verbose else 0,
                )
            seconds = result.history["epoch_seconds"].to_numpy(dtype=float)
            steady = float(np.mean(seconds[1:])) if len(seconds) > 1 else float(seconds[0])
            bare = result.model if result.model is model else model
            views = with_test_time_views(bare, options["tta"])
            row = {
                "architecture": args.architecture,
                "epochs": epochs,
                "seed": seed,
                "batch": options["batch_size"],
                "precision": policy,
                "val": metrics.accuracy(train.predict(bare, data.x_val)[0], data.y_val),
                "val_tta": metrics.accuracy(train.predict(views, data.x_val)[0], data.y_val),
                "test": metrics.accuracy(train.predict(bare, data.x_test)[0], data.y_test),
                "test_tta": metrics.accuracy(train.predict(views, data.x_test)[0], data.y_test),
                "train_s": round(result.train_seconds, 1),
                "first_epoch_s": round(float(seconds[0]), 1),
                "steady_epoch_s": round(steady, 1),
                "steady_images_per_s": round(len(data.y_train) / steady, 0),
            }
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if not k.startswith("test")}))
    # the test split, once, after the runs: choose settings by the validation figures above
    print("test accuracy (read once, for the record; choose by the validation figures above):")
    for row in rows:
        print(
            f"  test {row['architecture']} {row['epochs']} epochs seed {row['seed']}: "
            f"{row['test']} ({row['test_tta']} with the test-time views)"
        )
    if len(args.seeds) > 1:
        for epochs in args.epochs:
            tta = [r["test_tta"] for r in rows if r["epochs"] == epochs]
            print(
                f"{epochs} epochs: test with views {np.mean(tta):.4f} +- {np.std(tta):.4f} (n={len(tta)})"
            )
    if args.record:
        from results_io import write_result  # scripts/ is on sys.path: run as a script

        path = write_result(
            args.record,
            title=f"{args.architecture} with the {name} recipe",
            command="python " + " ".join([f"scripts/{Path(sys.argv[0]).name}", *sys.argv[1:]]),
            data_source=str(source),
            table=rows,
            notes=[f"backend {keras.backend.backend()}; options {json.dumps(overrides)}"],
        )
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
