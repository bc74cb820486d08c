"""Input pipeline and preprocessing throughput against the training speed of the smallest zoo model.

The augmentation pipeline must feed at least 5x the images per second that the smallest zoo model
trains at, and OpenCV preprocessing of all 60,000 images must take less than one training epoch of
that model. This script measures the three numbers on this machine and prints a Markdown table.

    python scripts/bench_input_pipeline.py --data-dir ../shared/data/cifar10-jpg
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from zoo.quiet import import_backend_quietly

POLICIES = {
    "none": [],
    "standard (flip, pad_crop, cutout)": [
        {"name": "flip"},
        {"name": "pad_crop"},
        {"name": "cutout"},
    ],
    "heavy (all ten steps)": [
        {"name": "flip"},
        {"name": "pad_crop"},
        {"name": "translate"},
        {"name": "rotate"},
        {"name": "zoom"},
        {"name": "cutout"},
        {"name": "random_erasing"},
        {"name": "mixup"},
        {"name": "cutmix"},
    ],
}
PREPROCESS = [
    {"name": "color_space", "space": "lab"},
    {"name": "equalize"},
    {"name": "clahe"},
    {"name": "denoise", "method": "gaussian"},
    {"name": "denoise", "method": "bilateral"},
    {"name": "denoise", "method": "nlmeans"},
]


def pipeline_rate(x, y, policy, batches: int) -> float:
    from benchmark.data.augment import make_dataset

    ds = make_dataset(x, y, num_classes=10, batch_size=128, policy=policy).repeat()
    it = iter(ds)
    for _ in range(5):
        next(it)
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * 128 / (time.perf_counter() - start)


def training_rate(name: str, x, y, steps: int) -> float:
    """Training images/second of zoo model ``name`` at batch 128, after a warm-up."""
    import keras

    import zoo

    keras.backend.clear_session()
    model = zoo.build(name)
    jit = bool(zoo.get(name).extra.get("jit_compile", False))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", jit_compile=jit)
    xb, yb = x[: 128 * steps].astype(np.float32), y[: 128 * steps]
    model.fit(xb[:256], yb[:256], batch_size=128, epochs=1, verbose=0)  # warm-up: tracing
    start = time.perf_counter()
    model.fit(xb, yb, batch_size=128, epochs=1, verbose=0, shuffle=False)
    return len(xb) / (time.perf_counter() - start)


def smallest_model() -> tuple[str, int]:
    """The scratch model with the fewest parameters."""
    import keras

    import zoo

    sizes = {}
    for name in zoo.list_models(kind="scratch"):
        sizes[name] = zoo.build(name).count_params()
        keras.backend.clear_session()
    name = min(sizes, key=sizes.get)
    return name, sizes[name]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument(
        "--compare", nargs="*", default=["fastnet", "seed_cnn"], help="zoo models to compare with"
    )
    parser.add_argument("--skip-preprocess", action="store_true")
    args = parser.parse_args()
    import_backend_quietly()
    from benchmark.data.datasets import load
    from benchmark.data.preprocess import apply_steps

    data = load("cifar10", data_dir=args.data_dir)
    x, y = data.x_train, data.y_train
    small, params = smallest_model()
    rates = {f"{small} (smallest, {params:,} params)": training_rate(small, x, y, args.steps)}
    for name in args.compare:
        rates[f"{name}"] = training_rate(name, x, y, args.steps)
    print(f"data: {data.source}")
    print("\n| zoo model | training images/s (batch 128) |\n|---|---|")
    for label, rate in rates.items():
        print(f"| {label} | {rate:,.0f} |")
    fastest = max(rates.values())
    train_rate = next(iter(rates.values()))
    print(
        "\n| augmentation policy | pipeline images/s | x smallest model | x fastest model |\n|---|---|---|---|"
    )
    for label, policy in POLICIES.items():
        rate = pipeline_rate(x, y, policy, args.batches)
        print(f"| {label} | {rate:,.0f} | {rate / train_rate:.1f}x | {rate / fastest:.1f}x |")

    if args.skip_preprocess:
        return
    everything = np.concatenate([data.x_train, data.x_val, data.x_test])
    epoch, fast_epoch = len(x) / train_rate, len(x) / fastest
    print(
        f"\nOne training epoch ({len(x):,} images): smallest model {epoch:.0f} s, fastest {fast_epoch:.0f} s"
    )
    print(
        "\n| preprocessing step (60,000 images) | seconds | share of an epoch: smallest | fastest |"
        "\n|---|---|---|---|"
    )
    for step in PREPROCESS:
        start = time.perf_counter()
        apply_steps(everything, [step])
        seconds = time.perf_counter() - start
        label = ", ".join(f"{k}={v}" for k, v in step.items() if k != "name")
        print(
            f"| {step['name']} {label} | {seconds:.1f} | {seconds / epoch:.2f} | {seconds / fast_epoch:.2f} |"
        )


if __name__ == "__main__":
    main()
