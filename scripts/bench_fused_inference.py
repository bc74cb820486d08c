"""Batch inference through the fused ensemble model vs calling its members one by one.

The fused model (``ensembles/best/model.keras``) runs every member and the combination in one
graph; the alternative is ``member.predict`` per member and a NumPy average. Both are timed on the
same batch; the script prints images per second and the ratio, and checks the outputs agree.

    python scripts/bench_fused_inference.py                               # 3 fresh zoo members
    python scripts/bench_fused_inference.py --members resnet20,seed_cnn,mobilenetv2_050 --images 4000
    python scripts/bench_fused_inference.py --run runs/cpu-quick --model greedy   # a real run
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_store(root: Path, names: list[str], n: int, seed: int):
    """A run store holding fresh (untrained) zoo members and an average of them: timing only."""
    import keras

    import zoo
    from benchmark.modelfile import save_model
    from benchmark.store.runstore import RunStore
    from ensembles.build import build_ensembles

    rng = np.random.default_rng(seed)
    store = RunStore(root)
    x = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    y = (np.arange(n) % 10).astype(np.int64)
    for key, arr in {"y_val": y, "y_test": y, "x_test": x, "sample_x": x[:4]}.items():
        store.save_array(key, arr)
    store.write_run(
        {"name": root.name, "seed": seed, "data": {"class_names": list(map(str, range(10)))}}
    )
    for i, name in enumerate(names):
        keras.utils.set_random_seed(seed + i)
        model = zoo.build(name)
        mid = f"m{i}_{name}"
        save_model(model, store.member_dir(mid) / "model.keras")
        probs = model.predict(x, batch_size=256, verbose=0)
        store.write_entry(
            store.member_dir(mid),
            config={"id": mid, "name": name, "preprocess": []},
            metrics={"status": "done", "val_accuracy": 0.1, "val_loss": 2.3, "finished_at": f"{i}"},
            val_probs=probs,
            test_probs=probs,
        )
    build_ensembles(store, {"methods": ["average-all"]}, seed)
    return store, "average-all"


def timed(fn, repeats: int) -> tuple[float, np.ndarray]:
    fn()  # warm-up: tracing and graph building are not inference
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--run", help="an existing run folder (default: a temp run of fresh members)"
    )
    parser.add_argument("--model", default=None, help="ensemble name in --run (default: the best)")
    parser.add_argument("--members", default="seed_cnn,resnet20,mobilenetv2_050")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    from benchmark.store.runstore import RunStore
    from ensembles.export import build_fused_model, ensemble_members, load_member_model
    from ensembles.methods import WeightedAverage

    tmp = None
    if args.run:
        store = RunStore(args.run)
        if args.model is None:
            args.model = (store.best_pointer() or {})["id"]
        name = args.model
    else:
        tmp = tempfile.TemporaryDirectory()
        store, name = make_store(Path(tmp.name) / "bench", args.members.split(","), 64, 0)
    entry = store.ensemble(name)
    if entry.config.get("weights") is None:
        raise SystemExit(f"{name} is a {entry.config['method']} ensemble; pick a weighted one")
    members = ensemble_members(store, entry)
    models = [load_member_model(m) for m in members]
    fused = build_fused_model(store, entry)
    x = np.random.default_rng(1).integers(0, 256, size=(args.images, 32, 32, 3), dtype=np.uint8)
    avg = WeightedAverage.from_weights(entry.config["weights"], int(fused.output_shape[-1]))
    bs = args.batch_size

    t_fused, p_fused = timed(lambda: fused.predict(x, batch_size=bs, verbose=0), args.repeats)
    t_each, p_each = timed(
        lambda: avg.predict_proba([m.predict(x, batch_size=bs, verbose=0) for m in models]),
        args.repeats,
    )
    diff = float(np.abs(p_fused - p_each).max())
    print(f"ensemble : {name} ({len(models)} members: {', '.join(m.name for m in members)})")
    print(f"images   : {args.images} (batch {bs}, best of {args.repeats})")
    print(f"fused    : {args.images / t_fused:8.1f} images/s  ({t_fused:.3f} s)")
    print(f"one-by-one: {args.images / t_each:7.1f} images/s  ({t_each:.3f} s)")
    print(f"speed-up : {t_each / t_fused:.2f}x   max |difference| {diff:.2e}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
