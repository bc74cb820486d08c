"""What a profile costs on a device whose rate is known, by the FLOP cost model, without that device.

Every member of the profile is costed as ``zoobench run PROFILE --plan`` costs it with
``costing = "flops"`` (``benchmark.plan.costmodel``: FLOPs per image counted from the built model,
over the device's training and inference rates), for the full CIFAR-10 split, with no budget, so
each member's estimate is what it asks for. The rate is given, not measured here: by default the
one implied by the only GPU figure recorded so far, fastnet training at about 21,000 images/s in
float32 on one H200 on JAX (docs/results/gpu-quick.json); that is a lower bound of what the device
sustains (a small net leaves it partly idle), so the times are upper bounds until a GPU measures
its own calibration.

    python scripts/retime_profile.py standard gpu-quick --write
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import results_io  # noqa: E402  (scripts/ sits beside this file)

FASTNET_H200_IMAGES_PER_SECOND = 21_000  # docs/results/gpu-quick.json: 20,766 and 21,038


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profiles", nargs="+")
    parser.add_argument("--train-rate", type=float, help="training FLOP/s (default: fastnet's)")
    parser.add_argument("--infer-rate", type=float, help="inference FLOP/s (default: 3x training)")
    parser.add_argument(
        "--write", action="store_true", help="write docs/results/profile-retimed.json"
    )
    args = parser.parse_args()
    os.environ["ZOOBENCH_CACHE"] = tempfile.mkdtemp(prefix="zoobench-retime-")

    import numpy as np

    import zoo
    from benchmark.config.profiles import load_profile
    from benchmark.formatting import duration
    from benchmark.plan import costmodel
    from benchmark.plan import tasks as plan
    from zoo.flops import count_flops

    fastnet = count_flops(zoo.build("fastnet", None, (32, 32, 3), 10))
    train = (
        args.train_rate
        or FASTNET_H200_IMAGES_PER_SECOND * costmodel.TRAIN_FLOPS_PER_FORWARD * fastnet
    )
    infer = args.infer_rate or costmodel.TRAIN_FLOPS_PER_FORWARD * train  # inference: no backward
    for policy in ("float32", "mixed_bfloat16"):  # bf16 is charged fp32's rate: an upper bound
        costmodel.record_rate(policy, train, infer, batch=256)
    x = np.zeros((1, 32, 32, 3), np.uint8)
    data = SimpleNamespace(
        name="cifar10",
        num_classes=10,
        input_shape=(32, 32, 3),
        x_train=x,
        y_train=np.zeros(45_000, int),
        y_val=np.zeros(5_000, int),
        y_test=np.zeros(10_000, int),
    )
    rows = []
    for name in args.profiles:
        profile = load_profile(name)
        profile.costing = "flops"
        tasks = plan.make_plan(profile, data, profile.seed, None, probe=True)
        total = 0.0
        for task in tasks:
            seconds = task.decision.estimate.seconds if task.decision else 0.0
            total += seconds
            rows.append(
                {
                    "profile": name,
                    "member": task.label,
                    "epochs": task.training["epochs"],
                    "estimate": duration(seconds) if seconds else f"- ({task.note})",
                }
            )
        rows.append({"profile": name, "member": "total", "epochs": "", "estimate": duration(total)})
        print(f"{name}: ~{duration(total)} for {len(tasks)} tasks", flush=True)
    for row in rows:
        print(row)
    if args.write:
        results_io.write_result(
            "profile-retimed",
            title="What the GPU profiles cost by the FLOP model on an H200-class rate (estimated, not measured)",
            command="python scripts/retime_profile.py " + " ".join(args.profiles) + " --write",
            data_source="none: costed for the full CIFAR-10 split (45,000 / 5,000 / 10,000); no image is read",
            table=rows,
            notes=[
                f"Device rate given, not measured: {train / 1e12:.2f} TFLOP/s training (fastnet's "
                f"{fastnet / 1e6:.0f} MFLOPs x 3 x {FASTNET_H200_IMAGES_PER_SECOND:,} images/s, the "
                "only GPU figure recorded, docs/results/gpu-quick.json), inference at 3x that. A "
                "small net leaves a GPU partly idle and bf16 is faster than fp32: these times are "
                "upper bounds.",
                "No budget applied: each member at the epochs its profile asks for; ensembles, "
                "robustness and the report are not in the total.",
                "Still to be measured on a GPU: the device's own calibration, and how far each "
                "estimate is from the member's real epochs.",
            ],
        )


if __name__ == "__main__":
    main()
