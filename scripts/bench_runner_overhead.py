"""Does the runner cost throughput? Train one zoo member through the runner and by a plain model.fit.

Both paths train the same architecture on the same images with the same optimizer and batch size;
the runner adds its tf.data pipeline (benchmark.data.augment, no augmentation here), callbacks (early
stopping, NaN and budget guards, epoch timer) and bookkeeping. Epoch time (training plus the
validation pass) is measured after the first epoch (tracing), runs alternate to share the machine's
noise, and the best epoch of each path is compared.

    python scripts/bench_runner_overhead.py --arch resnet20 --train 2000 --epochs 4 --repeats 2
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet20")
    parser.add_argument(
        "--data-dir", default=os.environ.get("ZOOBENCH_DATA", "../shared/data/cifar10-jpg")
    )
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--val", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    import keras
    import tensorflow as tf

    import zoo
    from benchmark.config.profiles import parse_profile
    from benchmark.data.datasets import load
    from benchmark.plan.tasks import expand
    from benchmark.run.runner import Runner

    data = load(
        "cifar10", data_dir=args.data_dir, train_size=args.train, val_size=args.val, test_size=100
    )
    training = {
        "epochs": args.epochs,
        "batch_size": args.batch,
        "optimizer": "adam",
        "learning_rate": 1e-3,
        "early_stopping_patience": 0,
    }
    profile = parse_profile(
        {"name": "overhead", "training": training, "members": [{"architecture": args.arch}]},
        "bench",
    )
    runner = Runner(profile, "/tmp/zoobench-overhead", data=data)
    task = expand(profile, 0)[0]

    def plain() -> list[float]:
        keras.backend.clear_session()
        keras.utils.set_random_seed(0)
        model = zoo.build(args.arch, None, data.input_shape, data.num_classes)
        model.compile(
            optimizer=keras.optimizers.Adam(1e-3),
            loss=keras.losses.CategoricalCrossentropy(),
            metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
            jit_compile=False,
        )  # what the runner uses unless the zoo entry asks for XLA

        def ds(x, y, shuffle, batch):
            d = tf.data.Dataset.from_tensor_slices((x, y))
            if shuffle:
                d = d.shuffle(len(x), seed=0)
            d = d.batch(batch).map(lambda a, b: (tf.cast(a, tf.float32), tf.one_hot(b, 10)))
            return d.prefetch(tf.data.AUTOTUNE)

        times: list[float] = []

        class Timer(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.t = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                times.append(time.perf_counter() - self.t)

        model.fit(
            ds(data.x_train, data.y_train, True, args.batch),
            validation_data=ds(data.x_val, data.y_val, False, max(args.batch, 256)),
            epochs=args.epochs,
            callbacks=[Timer()],
            verbose=0,
        )
        return times

    def through_runner() -> list[float]:
        result = runner.members.train(task, runner_hp(), dict(task.training), [], seed=0)
        return list(result.history["epoch_seconds"])

    def runner_hp():
        import keras_tuner

        return keras_tuner.HyperParameters()

    best = {"plain": float("inf"), "runner": float("inf")}
    for _ in range(args.repeats):
        for name, fn in (("plain", plain), ("runner", through_runner)):
            epochs = fn()[1:]  # the first epoch traces the graphs
            best[name] = min(best[name], min(epochs))
    n = len(data.y_train) + len(data.y_val)
    ips = {k: len(data.y_train) / v for k, v in best.items()}
    print(
        f"{args.arch}: {len(data.y_train)} train + {len(data.y_val)} val images a epoch, batch {args.batch}, "
        f"{tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count()} threads"
    )
    for k in ("plain", "runner"):
        print(
            f"  {k:<7} best epoch {best[k]:.2f} s  ->  {ips[k]:.0f} train images/s (epoch incl. validation)"
        )
    ratio = ips["runner"] / ips["plain"]
    print(f"  runner / plain = {ratio:.3f} ({(ratio - 1) * 100:+.1f}%); {n} images touched a epoch")


if __name__ == "__main__":
    main()
