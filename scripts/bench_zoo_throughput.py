"""Training throughput (images/second) of the zoo's scratch models, with XLA off and on.

Usage:
    python scripts/bench_zoo_throughput.py [--models resnet20 fastnet] [--steps 15] [--out FILE.md]
    python scripts/bench_zoo_throughput.py --accuracy-cpu-seconds 300 --models fastnet resnet20 \
        --data-dir ../shared/data/cifar10-jpg

Each model trains on one fixed synthetic uint8 batch (batch 128 by default; the data does not change
the cost of a step) with SGD + sparse cross-entropy, first for ``--warmup`` steps (tracing, XLA
compilation, allocator warm-up), then for ``--steps`` timed steps. The median of per-step times is
reported, which is robust to other processes stealing the CPU for a moment. The Markdown table goes
to stdout and to ``--out``; ``--json`` keeps the raw numbers. The best ``jit_compile`` setting per
model is what the registry entry's ``extra["jit_compile"]`` should say.

``--accuracy-cpu-seconds S`` instead trains each model on real CIFAR-10 until the process has used
S CPU-seconds (all threads; fair on a shared machine where wall time is not) and reports the
validation accuracy reached: accuracy per CPU-second, the measure the fast net is designed for.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

log = logging.getLogger("bench_zoo_throughput")


def measure(name: str, jit: bool, batch: int, warmup: int, steps: int) -> float:
    """Median training images/second of ``name`` over ``steps`` timed steps."""
    import keras
    import numpy as np

    import zoo

    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(batch, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, size=(batch,)).astype("int64")
    model = zoo.build(name)
    model.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9, nesterov=True),
        loss="sparse_categorical_crossentropy",
        jit_compile=jit,
    )
    for _ in range(warmup):
        model.train_on_batch(x, y)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - start)
    del model
    gc.collect()
    return batch / statistics.median(times)


def accuracy_per_cpu_seconds(
    name: str, data, cpu_seconds: float, batch: int, jit: bool = False
) -> dict[str, float]:
    """Train ``name`` (Adam, random flips) until ``cpu_seconds`` of process CPU time are spent."""
    import keras
    import tensorflow as tf

    import zoo

    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    model = zoo.build(name, num_classes=len(data.class_names))
    model.compile(
        optimizer=keras.optimizers.Adam(2e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=jit,
    )
    start = time.process_time()
    seen = [0]

    class Budget(keras.callbacks.Callback):
        def on_train_batch_end(self, batch_index, logs=None):
            seen[0] += batch
            if time.process_time() - start >= cpu_seconds:
                self.model.stop_training = True

    train = (
        tf.data.Dataset.from_tensor_slices((data.x_train, data.y_train))
        .shuffle(len(data.x_train), seed=0)
        .batch(batch)
        .map(lambda x, y: (tf.image.random_flip_left_right(x), y))
        .prefetch(2)
    )
    model.fit(train, epochs=1000, callbacks=[Budget()], verbose=0)
    used = time.process_time() - start
    _, acc = model.evaluate(data.x_val, data.y_val, batch_size=256, verbose=0)
    return {"val_accuracy": float(acc), "cpu_seconds": used, "images_seen": seen[0]}


def run_accuracy(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from benchmark.data.datasets import load

    data = load("cifar10", data_dir=args.data_dir, train_size=args.train_size, val_size=2000)
    rows, raw = [], {}
    for name in args.models or ["fastnet", "resnet9", "resnet20"]:
        r = accuracy_per_cpu_seconds(name, data, args.accuracy_cpu_seconds, args.batch)
        raw[name] = r
        log.info("%s: %s", name, r)
        rows.append(
            [
                name,
                f"{r['val_accuracy']:.3f}",
                f"{r['cpu_seconds']:.0f}",
                f"{r['images_seen'] / len(data.x_train):.1f}",
            ]
        )
    md = tabulate(
        rows, headers=["model", "val accuracy", "CPU-seconds", "epochs"], tablefmt="github"
    )
    note = (
        f"\n{data.source}: {len(data.x_train)} training images, {len(data.x_val)} validation; "
        f"Adam 2e-3, batch {args.batch}, flips, stopped after {args.accuracy_cpu_seconds:.0f} "
        "CPU-seconds\n"
    )
    print(md + note)
    if args.out:
        args.out.write_text(md + "\n" + note)
    if args.json:
        args.json.write_text(json.dumps(raw, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", help="names (default: every scratch model)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=4)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--jit", choices=("off", "on", "both"), default="both")
    parser.add_argument(
        "--xla-models", nargs="*", help="with --jit both: measure XLA only for these (default all)"
    )
    parser.add_argument("--out", type=Path, help="also write the Markdown table here")
    parser.add_argument("--json", type=Path, help="also write the raw numbers here")
    parser.add_argument(
        "--accuracy-cpu-seconds", type=float, help="measure accuracy per CPU-second instead"
    )
    parser.add_argument("--data-dir", help="CIFAR-10 location (accuracy mode)")
    parser.add_argument("--train-size", type=int, default=10000, help="accuracy mode subset")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.accuracy_cpu_seconds:
        return run_accuracy(args)

    import tensorflow as tf
    from tabulate import tabulate

    import zoo
    from zoo.flops import count_flops

    names = args.models or zoo.list_models(kind="scratch")
    settings = {"off": [False], "on": [True], "both": [False, True]}[args.jit]
    results: dict[str, dict] = {}
    for name in names:
        row = {"params": None, "flops": None}
        model = zoo.build(name)
        row["params"], row["flops"] = model.count_params(), count_flops(model)
        del model
        for jit in settings:
            if jit and args.jit == "both" and args.xla_models and name not in args.xla_models:
                continue
            key = "jit_on" if jit else "jit_off"
            try:
                row[key] = measure(name, jit, args.batch, args.warmup, args.steps)
            except Exception as exc:  # XLA may refuse an op on some builds: report, keep going
                log.warning("%s jit_compile=%s failed: %s", name, jit, exc)
                row[key] = None
            log.info("%-18s jit_compile=%-5s %s img/s", name, jit, row[key] and f"{row[key]:.0f}")
        results[name] = row

    base = results.get("resnet20")
    base_best = max(v for k, v in base.items() if k.startswith("jit") and v) if base else None
    table = []
    for name, row in sorted(
        results.items(),
        key=lambda kv: -max(v or 0 for k, v in kv[1].items() if k.startswith("jit")),
    ):
        speeds = {k: v for k, v in row.items() if k.startswith("jit") and v}
        best_key = max(speeds, key=speeds.get) if speeds else None
        best = speeds.get(best_key)
        table.append(
            [
                name,
                f"{row['params'] / 1e6:.2f}M",
                f"{row['flops'] / 1e6:.0f}M",
                *(
                    f"{row[k]:.0f}" if row.get(k) else ("failed" if k in row else "-")
                    for k in (["jit_off", "jit_on"] if args.jit == "both" else [f"jit_{args.jit}"])
                ),
                "on" if best_key == "jit_on" else "off",
                f"{best / base_best:.2f}x" if best and base_best else "-",
            ]
        )
    jit_headers = (
        ["img/s XLA off", "img/s XLA on"] if args.jit == "both" else [f"img/s XLA {args.jit}"]
    )
    headers = ["model", "params", "FLOPs/img", *jit_headers, "best XLA", "vs resnet20"]
    md = tabulate(table, headers=headers, tablefmt="github")
    note = (
        f"\nbatch {args.batch}, median of {args.steps} steps after {args.warmup} warm-up steps, "
        f"SGD, TensorFlow {tf.__version__}, {os.cpu_count()} CPU cores (shared)\n"
    )
    print(md + note)
    if args.out:
        args.out.write_text(md + "\n" + note)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
