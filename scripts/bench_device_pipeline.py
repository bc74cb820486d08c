"""Batch cost of the device input pipeline against the host one, on this backend's CPU build.

Each route hands out the batches of one epoch of a 512-image batch with the default recipe's
augmentation (alternating flip, 2-px pad-and-crop, 8-px cutout): the host route (a ``PyDataset``
that gathers and casts in NumPy, then runs the steps eagerly per batch) and the device route
(``benchmark.data.device_batches``: the split held as a device array, one jitted function a batch
on JAX, on-device ops on PyTorch). Median seconds a batch after the first epoch's first batches
(which compile); the images are random uint8 pixels (the cost does not depend on them).

    KERAS_BACKEND=jax python scripts/bench_device_pipeline.py --write
    KERAS_BACKEND=torch python scripts/bench_device_pipeline.py --write
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import results_io  # noqa: E402  (scripts/ sits beside this file)

POLICY = [
    {"name": "alternating_flip"},
    {"name": "pad_crop", "padding": 2},
    {"name": "cutout", "size": 8},
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_240)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--write", action="store_true", help="add to docs/results/device-pipeline")
    args = parser.parse_args()

    import keras
    import numpy as np
    from keras import ops

    from benchmark.data.augment import make_dataset, validate_policy

    backend = keras.backend.backend()
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (args.images, 32, 32, 3)).astype(np.uint8)
    y = np.arange(args.images) % 10
    policy = validate_policy(POLICY)
    rows = []
    for route, on_device in (("host", False), ("device", True)):
        batches = make_dataset(
            x,
            y,
            num_classes=10,
            batch_size=args.batch,
            policy=policy,
            epochs=2,
            on_device=on_device,
        )
        times = []
        for _ in range(2):  # two epochs: the second is steady
            for i in range(len(batches)):
                start = time.perf_counter()
                images, _ = batches[i]
                ops.convert_to_numpy(images[0, 0, 0])  # wait for the device's work
                times.append(time.perf_counter() - start)
            batches.on_epoch_end()
        steady = statistics.median(times[len(batches) :])
        rows.append(
            {
                "backend": backend,
                "route": route,
                "ms a batch": round(1000 * steady, 2),
                "images/s": round(args.batch / steady),
                "first batch ms (compile)": round(1000 * times[0], 1),
            }
        )
        print(rows[-1], flush=True)
    if args.write:
        name = "device-pipeline"
        try:
            earlier = [r for r in results_io.load(name)["table"] if r["backend"] != backend]
        except (OSError, KeyError, ValueError):
            earlier = []
        results_io.write_result(
            name,
            title="The input pipeline on the device against the host route (CPU builds of JAX and PyTorch)",
            command="KERAS_BACKEND={jax,torch} python scripts/bench_device_pipeline.py --write",
            data_source=f"{args.images:,} random uint8 32x32 images, batches of {args.batch}",
            table=earlier + rows,
            notes=[
                "Policy: alternating flip, 2-px pad-and-crop, 8-px cutout (airbench's with cutout). "
                "Median over the second epoch's batches; the first batch of each shape compiles.",
                "Measured on the CPU builds: here the 'device' is the same CPU, so the figure is "
                "the cost of the per-batch host work the device route removes (NumPy gather and "
                "cast, eager op dispatch), not what a GPU gains. GPU figures are still to be "
                "measured: no GPU was lent for this change.",
                "The machine was shared with other engineers' jobs (2 cores); the two routes ran "
                "back to back.",
            ],
        )


if __name__ == "__main__":
    main()
