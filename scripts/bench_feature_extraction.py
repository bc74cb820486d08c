"""Measure feature extraction on real CIFAR-10: ImageNet EfficientNet-Lite0 features + a tuned head.

Full 45k / 5k / 10k split. Features are computed once per split (cached, so a rerun skips them);
Keras Tuner picks the head on validation accuracy; the test split is scored once, at the end.
Also measures what cached features save: one frozen-backbone training epoch (timed on a sample,
scaled to the training split) against one head epoch on cached features.

    python scripts/bench_feature_extraction.py --data-dir ../shared/data/cifar10-jpg --input-size 160
    python scripts/bench_feature_extraction.py --input-size 160 --feature-levels 5 --flip-features
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-dir", default=os.environ.get("ZOOBENCH_DATA", "../shared/data/cifar10-jpg")
    )
    parser.add_argument("--architecture", default="efficientnet_lite0")
    parser.add_argument("--input-size", type=int, default=160)
    parser.add_argument("--epochs", type=int, default=60, help="max epochs per head trial")
    parser.add_argument("--max-trials", type=int, default=8, help="Keras Tuner head trials")
    parser.add_argument("--sample", type=int, default=512, help="images for the throughput probe")
    parser.add_argument(
        "--frozen-sample",
        type=int,
        default=1024,
        help="images for timing a frozen-backbone training epoch",
    )
    parser.add_argument(
        "--feature-levels",
        type=int,
        default=1,
        help="pooled ends of the top N backbone stages (transfer option)",
    )
    parser.add_argument(
        "--flip-features",
        action="store_true",
        help="mirrored training rows; val/test average image and mirror",
    )
    parser.add_argument("--cache-dir", type=Path, default=None, help="feature cache folder")
    parser.add_argument("--seed", type=int, default=0, help="data split seed")
    parser.add_argument(
        "--head-seed",
        type=int,
        default=None,
        help="head search seed (default: --seed); the features stay cached",
    )
    parser.add_argument("--train-size", type=int, default=None, help="subset (smoke runs only)")
    parser.add_argument("--test-size", type=int, default=None, help="subset (smoke runs only)")
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    import keras
    import keras_tuner
    import numpy as np

    from benchmark.data import datasets
    from benchmark.train.transfer import extract_features, load_backbone, run_strategy

    cache_dir = (
        args.cache_dir
        or Path(os.environ.get("ZOOBENCH_CACHE", Path.home() / ".cache" / "zoobench")) / "features"
    )
    t_start = time.perf_counter()
    data = datasets.load(
        "cifar10",
        data_dir=args.data_dir,
        seed=args.seed,
        train_size=args.train_size,
        val_size=args.train_size,
        test_size=args.test_size,
    )
    print(
        f"data: {data.source}, train/val/test = {len(data.y_train)}/{len(data.y_val)}/{len(data.y_test)}"
    )
    hp = keras_tuner.HyperParameters()
    hp.Fixed("input_size", args.input_size)

    # 1. Throughput probe on a small sample (not cached: a throwaway folder).
    backbone = load_backbone(args.architecture, hp, data.input_shape, data.num_classes)
    probe_dir = cache_dir / "probe"
    sample = data.x_train[: args.sample]
    extract_features(
        backbone, sample[:64], cache_dir=probe_dir, data_fingerprint="warmup", split="warmup"
    )
    _, probe = extract_features(
        backbone,
        sample,
        cache_dir=probe_dir,
        data_fingerprint=f"probe-{time.time()}",
        split="probe",
    )
    for f in probe_dir.glob("features-*"):
        f.unlink()
    ips = probe["images_per_second"]
    total = len(data.y_train) + len(data.y_val) + len(data.y_test)
    print(
        f"extraction probe: {ips:.1f} images/s at {args.input_size}px "
        f"-> about {total / ips / 60:.1f} min for all {total} images"
    )

    # 2. Feature extraction + tuned head (selection on validation only).
    result = run_strategy(
        "feature-extraction",
        args.architecture,
        hp,
        data,
        cache_dir=cache_dir,
        epochs=args.epochs,
        seed=args.seed if args.head_seed is None else args.head_seed,
        tuner={"max_trials": args.max_trials},
        options={"feature_levels": args.feature_levels, "flip_features": args.flip_features},
    )
    info = result.info
    val_acc = float(np.mean(result.val_probs.argmax(axis=1) == data.y_val))
    test_acc = float(np.mean(result.test_probs.argmax(axis=1) == data.y_test))  # read once, here

    # 3. A frozen-backbone epoch, the alternative to cached features: timed on a sample, scaled up.
    # With --flip-features the model runs the backbone on each image and its mirror, and a head
    # epoch covers twice the rows: both sides of the comparison do two passes per training image.
    model = result.model
    model.get_layer("backbone").trainable = False
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=False,
    )
    xs, ys = data.x_train[: args.frozen_sample], data.y_train[: args.frozen_sample]
    model.fit(xs[:128], ys[:128], epochs=1, batch_size=64, verbose=0)  # trace once
    t0 = time.perf_counter()
    model.fit(xs, ys, epochs=1, batch_size=64, verbose=0)
    frozen_epoch = (time.perf_counter() - t0) * len(data.y_train) / len(xs)
    head_epoch = info["head_epoch_seconds"]
    epochs_run = int(len(result.history))
    cached_total = info["feature_seconds"] + info["head_seconds"]
    figures = {
        "architecture": args.architecture,
        "input_size": args.input_size,
        "split_seed": args.seed,
        "head_seed": args.seed if args.head_seed is None else args.head_seed,
        "features": info["features"],
        "feature_dim": info["feature_dim"],
        "flip_features": info["flip_features"],
        "data": data.source,
        "val_accuracy": round(val_acc, 4),
        "test_accuracy": round(test_acc, 4),
        "head_hp": info["head_hp"],
        "head_trials": info["head_trials"],
        "extract_images_per_second": info["extract_images_per_second"],
        "feature_seconds": info["feature_seconds"],
        "feature_cache": info["feature_cache"],
        "head_seconds": info["head_seconds"],
        "head_epoch_seconds": head_epoch,
        "frozen_backbone_epoch_seconds": round(frozen_epoch, 1),
        "speedup_per_epoch": round(frozen_epoch / head_epoch, 1),
        "chosen_head_epochs": epochs_run,
        "speedup_same_epochs_and_trials": round(
            frozen_epoch * epochs_run * (info["head_trials"] + 1) / cached_total, 1
        ),
        "wall_seconds": round(time.perf_counter() - t_start, 1),
    }
    print(json.dumps(figures, indent=2))
    print(
        f"{args.architecture} / feature-extraction @{args.input_size}px: test accuracy "
        f"{test_acc:.2%} (val {val_acc:.2%}); extraction {info['feature_seconds']:.0f}s "
        f"+ head search {info['head_seconds']:.0f}s; a head epoch {head_epoch:.2f}s vs a "
        f"frozen-backbone epoch {frozen_epoch:.0f}s ({frozen_epoch / head_epoch:.0f}x)"
    )
    if args.out:
        args.out.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
