"""What a robustness sample costs on this machine, and what interval it buys: how cpu-quick's was chosen.

Usage:
    python scripts/bench_robustness_sample.py [--images 256] [--record robustness-sample]

Measures, with the code a run uses (``benchmark.run.robustness.predict`` and ``adabn_probs``), the
images per second of the default run's members' networks (EfficientNet-Lite2 and -Lite0 at 160 px,
fastnet at 32 px; random images, the cost does not depend on them), and how long generating each
corruption takes on 1,100 images; then projects the robustness step's time for candidate
``[robustness]`` settings of cpu-quick beside the widest 95% Wilson interval each gives. FGSM through
the fused ensembles is not projected (it is the same 50 images in every candidate).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# (member, architecture, input side, passes per image: the Lite members average each image with
# its mirror, flip_features)
MEMBERS = (
    ("Lite2 features @160px", "efficientnet_lite2", 160, 2),
    ("Lite0 features @160px", "efficientnet_lite0", 160, 2),
    ("fastnet", "fastnet", 32, 1),
)
# candidate cpu-quick settings: (name, corruptions, severities, images, adabn)
CANDIDATES = (
    ("before (8 x 1 x 50, AdaBN)", 8, 1, 50, True),
    ("8 x 1 x 400, AdaBN", 8, 1, 400, True),
    ("3 x 1 x 400, AdaBN", 3, 1, 400, True),
    ("chosen: 3 x 1 x 400, no AdaBN", 3, 1, 400, False),
)


def rates(architecture: str, side: int, images: int) -> tuple[float, float]:
    """(prediction, AdaBN pass) images per second of ``architecture`` at ``side`` px."""
    import keras
    import numpy as np

    import zoo
    from benchmark.run.robustness import adabn_probs, predict

    keras.backend.clear_session()
    model = zoo.build(architecture, input_shape=(side, side, 3), num_classes=10)
    x = np.random.default_rng(0).integers(0, 256, (images, side, side, 3)).astype(np.float32)
    predict(model, x)  # set-up and tracing: the run pays it once a member
    adabn_probs(model, x[: len(x) // 2])
    start = time.perf_counter()
    predict(model, x)
    predicted = images / (time.perf_counter() - start)
    start = time.perf_counter()
    adabn_probs(model, x)  # one adapting pass (one batch: its outputs are the predictions)
    adapted = images / (time.perf_counter() - start)
    return predicted, adapted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256, help="images per timed pass")
    parser.add_argument("--record", default="", help="write the result NAME under docs/results")
    args = parser.parse_args()

    import numpy as np

    from benchmark.data.corruptions import CORRUPTIONS, corrupt
    from benchmark.metrics import wilson_half_width

    measured = {}
    for member, architecture, side, passes in MEMBERS:
        predicted, adapted = rates(architecture, side, args.images)
        measured[member] = (predicted / passes, adapted / passes)
        print(f"{member}: {predicted / passes:.1f} img/s predicted, {adapted / passes:.1f} AdaBN")
    rows = []
    for name, n_corr, n_sev, images, adabn in CANDIDATES:
        seen = images * (1 + n_corr * n_sev)  # the clean images and every cell
        seconds = sum(
            seen / predicted + (seen / adapted if adabn else 0.0)
            for predicted, adapted in measured.values()
        )
        rows.append(
            {
                "cpu-quick [robustness]": name,
                "images a member sees": f"{seen:,}",
                "projected member time": f"{seconds / 60:.1f} min",
                "widest 95% interval": f"+-{100 * wilson_half_width(images):.1f} points",
            }
        )
    for member, (predicted, adapted) in measured.items():
        rows.append(
            {
                "cpu-quick [robustness]": f"rate: {member}",
                "images a member sees": f"{predicted:.1f} img/s predicted",
                "projected member time": f"{adapted:.1f} img/s AdaBN",
                "widest 95% interval": "",
            }
        )
    clean = np.random.default_rng(0).integers(0, 256, (1100, 32, 32, 3)).astype(np.uint8)
    generation = []
    for name in CORRUPTIONS:
        start = time.perf_counter()
        corrupt(clean, name, 5, 0)
        generation.append(f"{name} {time.perf_counter() - start:.2f}s")
    print("\n".join(str(r) for r in rows))
    print("generation, 1,100 images at severity 5:", "; ".join(generation))
    if args.record:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from results_io import write_result

        load = os.getloadavg()[0]
        path = write_result(
            args.record,
            title="What a robustness sample costs, and the interval it buys (cpu-quick's choice)",
            command="python " + " ".join([f"scripts/{Path(sys.argv[0]).name}", *sys.argv[1:]]),
            data_source=f"random uint8 images, {args.images} a timed pass (cost only)",
            table=rows,
            notes=[
                f"Load average {load:.1f} when it finished: other work shared the 2 cores, so the "
                "rates are lower than on a quiet machine and the projections are upper bounds.",
                "Rates per image as a member sees it: the Lite members run each image and its "
                "mirror (flip_features), so their network rate is halved. AdaBN rates are one "
                "adapting pass over the images.",
                "Projected member time: the three members' prediction (and AdaBN) passes over "
                "the clean images and every (corruption, severity) cell; FGSM through the fused "
                "ensembles (50 images in every candidate) and corruption generation come on top.",
                "Chosen for cpu-quick: three corruptions (noise, blur, weather) at severity 3 on "
                "400 images, AdaBN off: every corruption figure within +-5 points; FGSM stays on 50 "
                "images and is marked indicative (~) with its interval.",
                "Generating each corruption on 1,100 images at severity 5: "
                + "; ".join(generation)
                + ".",
            ],
        )
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
