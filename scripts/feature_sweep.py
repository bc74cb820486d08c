"""Which frozen-backbone features pay on CIFAR-10: backbone x resolution x feature levels x mirrors.

For each ``--configs`` entry (``lite0@160``...) it extracts 5-level features (the last layer's
pooled output plus four stage ends) of the full 45k / 5k / 10k split and of its mirror images,
then trains one fixed head (zoobench's head: standardised features -> 512 ReLU -> softmax,
dropout 0.2, L2 1e-4, Adam 5e-4, early stopping on validation) on: the last layer alone or all
levels, with or without the mirrors. Pairs of configs are also scored as a probability average
of their heads (selected on validation like an ensemble, read on test once). Accuracy does not
depend on the machine, so the sweep can run where extraction is fast (a GPU, JAX backend); the
CPU's cost of each config comes from ``bench_extraction_runtime.py``. Writes ``--out`` JSON.

    KERAS_BACKEND=jax python scripts/feature_sweep.py --data .gpu/data/cifar10-jpg.tar.gz \\
        --configs lite0@128,lite0@160,lite2@160 --out sweep.json
"""

from __future__ import annotations

import argparse
import itertools
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
        "--data",
        default=os.environ.get("ZOOBENCH_DATA", "../shared/data/cifar10-jpg"),
        help="the class-folder copy, or a tar from gpu_check.py pack",
    )
    parser.add_argument(
        "--configs",
        default="lite0@96,lite0@128,lite0@160,lite0@224,lite1@128,"
        "lite1@160,lite2@128,lite2@160,lite2@224",
    )
    parser.add_argument(
        "--ablate",
        default="lite0@160,lite2@160",
        help="configs that also get the last-layer / no-mirror heads",
    )
    parser.add_argument(
        "--weights",
        type=Path,
        default=None,
        help="folder of NAME.npz Keras-layout weights (float16 allowed) to use "
        "instead of the installed .pth packages",
    )
    parser.add_argument("--train-size", type=int, default=None, help="a subset, for a dry run")
    parser.add_argument("--test-size", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--out", type=Path, required=True)
    return parser.parse_args()


def use_weight_files(folder: Path) -> None:
    """Point zoo's Lite loader at ``folder/NAME.npz`` (cast to float32) instead of the packages."""
    import numpy as np

    from zoo import efficientnet_lite_net as lite

    def converted(variant, source=None):
        name = variant if isinstance(variant, str) else variant.name
        with np.load(folder / f"{name}.npz", allow_pickle=False) as npz:
            return {k: npz[k].astype(np.float32) for k in npz.files}

    lite.converted_weights = converted


def train_head(f_train, y_train, f_val, y_val, epochs: int, seed: int = 0):
    import keras
    import keras_tuner

    from benchmark.train.transfer import _head_hypermodel

    mean, var = f_train.mean(axis=0), f_train.var(axis=0) + 1e-6
    build = _head_hypermodel(10, f_train.shape[1], mean, var, 5e-4)
    hp = keras_tuner.HyperParameters()
    hp.Fixed("units", 512)
    hp.Fixed("dropout", 0.2)
    hp.Fixed("learning_rate", 5e-4)
    hp.Fixed("l2", 1e-4)
    keras.utils.set_random_seed(seed)
    head = build(hp)
    stop = keras.callbacks.EarlyStopping(
        monitor="val_accuracy", patience=5, restore_best_weights=True
    )
    head.fit(
        f_train,
        y_train,
        validation_data=(f_val, y_val),
        epochs=epochs,
        batch_size=256,
        callbacks=[stop],
        verbose=0,
    )
    return head


def main() -> None:
    args = parse_args()
    import keras
    import keras_tuner
    import numpy as np

    from benchmark.data import datasets
    from benchmark.train.extraction import extractor_model
    from benchmark.train.transfer import load_backbone, multi_level

    if args.weights:
        use_weight_files(args.weights)
    data_dir, scratch = Path(args.data), None
    if data_dir.is_file():
        from gpu_check import unpack

        scratch = tempfile.TemporaryDirectory(prefix="zoobench-sweep-")
        data_dir = unpack(data_dir, Path(scratch.name))
    data = datasets.load(
        "cifar10", data_dir=data_dir, seed=0, train_size=args.train_size, test_size=args.test_size
    )
    print(
        f"{data.source}: train/val/test {len(data.y_train)}/{len(data.y_val)}/{len(data.y_test)}; "
        f"backend {keras.backend.backend()}",
        flush=True,
    )
    results: dict = {
        "data": data.source,
        "sizes": [len(data.y_train), len(data.y_val), len(data.y_test)],
        "backend": keras.backend.backend(),
        "configs": {},
        "pairs": {},
    }
    probs: dict[str, tuple] = {}
    ablate = set(args.ablate.split(","))
    y_train2 = np.concatenate([data.y_train, data.y_train])
    for config in args.configs.split(","):
        name, size = config.split("@")
        hp = keras_tuner.HyperParameters()
        hp.Fixed("input_size", int(size))
        backbone = load_backbone(f"efficientnet_{name}", hp, data.input_shape, 10)
        last_width = int(backbone.model.output.shape[-1])
        model = extractor_model(multi_level(backbone, 5))
        t0 = time.perf_counter()
        feats = {}
        for split in ("train", "val", "test"):
            x = getattr(data, f"x_{split}")
            feats[split] = model.predict(x, batch_size=args.batch_size, verbose=0)
            feats[f"{split}-m"] = model.predict(
                np.ascontiguousarray(x[:, :, ::-1]), batch_size=args.batch_size, verbose=0
            )
        seconds = time.perf_counter() - t0
        row = {
            "extract_seconds": round(seconds, 1),
            "features": int(feats["train"].shape[1]),
            "last_layer_features": last_width,
            "heads": {},
        }
        variants = [("levels5+mirrors", True, True)]
        if config in ablate:
            variants += [
                ("levels5", True, False),
                ("last+mirrors", False, True),
                ("last", False, False),
            ]
        for label, levels, mirrors in variants:
            cut = slice(None) if levels else slice(-last_width, None)
            if mirrors:
                f_train = np.concatenate([feats["train"][:, cut], feats["train-m"][:, cut]])
                y = y_train2
                f_val = (feats["val"][:, cut] + feats["val-m"][:, cut]) / 2
                f_test = (feats["test"][:, cut] + feats["test-m"][:, cut]) / 2
            else:
                f_train, y = feats["train"][:, cut], data.y_train
                f_val, f_test = feats["val"][:, cut], feats["test"][:, cut]
            t1 = time.perf_counter()
            head = train_head(f_train, y, f_val, data.y_val, args.epochs)
            p_val = np.asarray(head.predict(f_val, batch_size=2048, verbose=0))
            p_test = np.asarray(head.predict(f_test, batch_size=2048, verbose=0))
            row["heads"][label] = {
                "val": round(float((p_val.argmax(1) == data.y_val).mean()), 4),
                "test": round(float((p_test.argmax(1) == data.y_test).mean()), 4),
                "head_seconds": round(time.perf_counter() - t1, 1),
            }
            if label == "levels5+mirrors":
                probs[config] = (p_val, p_test)
        results["configs"][config] = row
        shown = {**row, "heads": {k: without_test(v) for k, v in row["heads"].items()}}
        print(config, json.dumps(shown), flush=True)  # validation only: the figures to choose by
        args.out.write_text(json.dumps(results, indent=2))
    for a, b in itertools.combinations(probs, 2):
        p_val = (probs[a][0] + probs[b][0]) / 2
        p_test = (probs[a][1] + probs[b][1]) / 2
        results["pairs"][f"{a}+{b}"] = {
            "val": round(float((p_val.argmax(1) == data.y_val).mean()), 4),
            "test": round(float((p_test.argmax(1) == data.y_test).mean()), 4),
        }
    best = sorted(results["pairs"].items(), key=lambda kv: -kv[1]["val"])[:8]
    for pair, score in best:
        print("pair", pair, without_test(score), flush=True)
    args.out.write_text(json.dumps(results, indent=2))
    # the test split, once, after every choice above was made on validation
    print("test accuracy (read once, for the record; choose by the validation figures above):")
    for config, row in results["configs"].items():
        for label, head in row["heads"].items():
            print(f"  test {config} {label}: {head['test']}")
    for pair, score in best:
        print(f"  test pair {pair}: {score['test']}")


def without_test(figures: dict) -> dict:
    """``figures`` without its test accuracy (printed apart, at the end)."""
    return {k: v for k, v in figures.items() if k != "test"}


if __name__ == "__main__":
    main()
