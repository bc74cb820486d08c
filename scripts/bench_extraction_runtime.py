"""Which runtime extracts frozen-backbone features fastest on this CPU, and are its features equal?

Builds the feature extractor a feature-extraction member uses (raw pixels -> resize -> the
backbone's normalisation -> pooled features, ``--feature-levels`` stage ends), then times the same
images through: Keras/TensorFlow ``predict`` at several batch sizes, the same with XLA
(``jit_compile=True``), ONNX Runtime (tf2onnx export) and LiteRT (XNNPACK), each after one warm-up
batch. Every runtime's features are compared with TensorFlow's (max absolute difference; the
contract is 1e-3). Prints a table and, with ``--out``, writes it as JSON.

    python scripts/bench_extraction_runtime.py --data-dir ../shared/data/cifar10-jpg --input-size 128
    python scripts/bench_extraction_runtime.py --architecture efficientnet_lite2 --input-size 160
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-dir", default=os.environ.get("ZOOBENCH_DATA", "../shared/data/cifar10-jpg")
    )
    parser.add_argument("--architecture", default="efficientnet_lite0")
    parser.add_argument("--input-size", type=int, default=128)
    parser.add_argument("--feature-levels", type=int, default=5)
    parser.add_argument("--images", type=int, default=1024, help="timed images per runtime")
    parser.add_argument("--batch-sizes", default="32,128,256")
    parser.add_argument("--runtimes", default="tf,xla,onnx,litert")
    parser.add_argument("--out", type=Path, default=None)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    import numpy as np
    from tabulate import tabulate

    from benchmark.data import datasets
    from benchmark.train.extraction import extractor_model, runtime_extractor
    from benchmark.train.transfer import load_backbone, multi_level

    data = datasets.load(
        "cifar10",
        data_dir=args.data_dir,
        train_size=args.images,
        val_size=100,
        test_size=100,
        seed=0,
    )
    x = np.ascontiguousarray(data.x_train[: args.images])
    import keras_tuner

    hp = keras_tuner.HyperParameters()
    hp.Fixed("input_size", args.input_size)
    backbone = load_backbone(args.architecture, hp, x.shape[1:], 10)
    backbone = multi_level(backbone, args.feature_levels)
    model = extractor_model(backbone)
    rows, reference = [], None
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    wanted = args.runtimes.split(",")
    with tempfile.TemporaryDirectory(prefix="zoobench-runtime-") as tmp:
        for runtime in ("tf", "xla", "onnx", "litert"):
            if runtime not in wanted:
                continue
            for batch in sizes if runtime in ("tf", "xla") else [max(sizes)]:
                t0 = time.perf_counter()
                run = runtime_extractor(model, runtime, Path(tmp), batch_size=batch)
                setup = time.perf_counter() - t0
                run(x[:batch])  # warm-up: graph tracing / compilation / session start
                t1 = time.perf_counter()
                feats = run(x)
                seconds = time.perf_counter() - t1
                if reference is None:
                    reference = feats
                diff = float(np.max(np.abs(feats - reference)))
                rows.append(
                    {
                        "runtime": runtime,
                        "batch": batch,
                        "images/s": round(len(x) / seconds, 1),
                        "setup s": round(setup, 1),
                        "max |diff| vs tf": f"{diff:.2e}",
                    }
                )
                print(rows[-1], flush=True)
    print(
        f"\n{args.architecture} @{args.input_size}px, {args.feature_levels} feature levels, "
        f"{len(x)} CIFAR-10 images (JPEG copy), {os.cpu_count()} CPU cores"
    )
    print(tabulate(rows, headers="keys", tablefmt="github"))
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
