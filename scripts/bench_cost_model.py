"""How good is the FLOP cost model on this machine? Predicted against real epoch seconds, for the
planner's two ways of costing a member: the FLOP model (``benchmark.plan.costmodel``: FLOPs over
the device's rate, measured once on the calibration net) and the per-model probe
(``benchmark.plan.budget``: a few timed training steps of the real model).

For each architecture: its FLOPs, the epoch seconds each way predicts (training at the probe's
batch plus the validation pass, as ``benchmark.plan.tasks.estimate`` costs an epoch), and the real
steady epoch (the fastest epoch after the first of a short ``benchmark.train.training.fit``, which
traces the graph). The error is ``predicted / real``; the summary is the geometric mean of its
distance from 1 (the factor a plan is typically off by).

    python scripts/bench_cost_model.py --archs fastnet resnet20 seed_cnn mobilenetv2 --train 2000
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import results_io  # noqa: E402  (scripts/ sits beside this file)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=["fastnet", "resnet20", "seed_cnn"])
    parser.add_argument(
        "--data-dir", default=os.environ.get("ZOOBENCH_DATA", "../shared/data/cifar10-jpg")
    )
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--val", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--write", action="store_true", help="write docs/results/cost-model.json")
    args = parser.parse_args()

    import keras

    import zoo
    from benchmark.data.datasets import load
    from benchmark.plan import budget, costmodel
    from benchmark.train import training
    from zoo.flops import count_flops

    data = load(
        "cifar10", data_dir=args.data_dir, train_size=args.train, val_size=args.val, test_size=100
    )
    n_train, n_val = len(data.y_train), len(data.y_val)
    shape = data.x_train.shape[1:]
    loads = [os.getloadavg()[0]]
    rate = costmodel.device_rate("float32", timer=budget._time_model)  # measured or read
    rows, errors = [], {"flops": [], "probe": []}
    for arch in args.archs:
        keras.backend.clear_session()
        model = zoo.build(arch, None, shape, data.num_classes)
        flops = count_flops(model)

        def factory(arch=arch):
            return zoo.build(arch, None, shape, data.num_classes)

        timing = budget._time_model(factory, shape, data.num_classes, args.batch, 2, 3)
        predicted = {
            "flops": n_train * costmodel.TRAIN_FLOPS_PER_FORWARD * flops / rate.train
            + n_val * flops / rate.infer,
            "probe": n_train / timing.train + n_val / timing.infer,
        }
        keras.utils.set_random_seed(0)
        result = training.fit(
            factory(),
            data.x_train,
            data.y_train,
            data.x_val,
            data.y_val,
            {
                **training.resolve_training({}),
                "epochs": args.epochs,
                "batch_size": args.batch,
                "early_stopping_patience": 0,
            },
            num_classes=data.num_classes,
        )
        real = float(result.history["epoch_seconds"].iloc[1:].min())
        loads.append(os.getloadavg()[0])
        for way in errors:
            errors[way].append(predicted[way] / real)
        rows.append(
            {
                "architecture": arch,
                "MFLOPs/image": round(flops / 1e6, 1),
                "real epoch s": round(real, 2),
                "FLOP model s": round(predicted["flops"], 2),
                "FLOP model / real": round(predicted["flops"] / real, 2),
                "probe s": round(predicted["probe"], 2),
                "probe / real": round(predicted["probe"] / real, 2),
            }
        )
        print(rows[-1], flush=True)

    def typical(ratios: list[float]) -> float:
        return math.exp(sum(abs(math.log(r)) for r in ratios) / len(ratios))

    summary = {way: typical(r) for way, r in errors.items()}
    print(
        f"device rate {rate.train / 1e9:.1f} GFLOP/s training, {rate.infer / 1e9:.1f} inference; "
        f"typical factor off: FLOP model {summary['flops']:.2f}x, probe {summary['probe']:.2f}x"
    )
    if args.write:
        results_io.write_result(
            "cost-model",
            title="The FLOP cost model against per-model probes: predicted vs real epoch seconds (CPU)",
            command="python scripts/bench_cost_model.py "
            + " ".join(a for a in sys.argv[1:] if a != "--write")
            + " --write",
            data_source=(
                f"CIFAR-10 (JPEG copy), a stratified {n_train} train / {n_val} validation subset; "
                f"batch {args.batch}, Adam, no augmentation, float32"
            ),
            table=rows,
            notes=[
                f"Device rate (the calibration net, {time.strftime('%Y-%m-%d')}): "
                f"{rate.train / 1e9:.1f} GFLOP/s training, {rate.infer / 1e9:.1f} GFLOP/s inference.",
                f"Typical factor off (geometric mean of max(p/r, r/p)): FLOP model "
                f"{summary['flops']:.2f}x, probe {summary['probe']:.2f}x. On a CPU the probe stays "
                "the default (costing = 'auto' probes where there is no accelerator).",
                "Real epoch: the fastest epoch after the first (which traces) of "
                f"{args.epochs}; predicted: training at the batch plus the validation pass.",
                "1-minute load average during the measurement: "
                + ", ".join(f"{x:.1f}" for x in loads)
                + " on 2 cores: other engineers' jobs shared the machine, which slows the real "
                "epochs and the probes alike but the one-off device calibration only once.",
                "GPU figures are still to be measured: no GPU was lent for this change.",
            ],
        )


if __name__ == "__main__":
    main()
