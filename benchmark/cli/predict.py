"""``zoobench predict``: classify image files with a run's best model, a member or an ensemble.

Exit status: 0 every input was predicted; 1 some inputs failed (each named on stderr) but at least
one was predicted; 2 a usage error (unknown run or model, bad option) or no input could be used.
"""

from __future__ import annotations

import argparse
import json
import sys

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2


def add_commands(sub) -> None:
    p = sub.add_parser(
        "predict",
        help="classify images with a run's best model, a member or an ensemble",
        description="Classify PNG / JPEG / BMP / TIFF / WebP images (files or folders). Exit status: "
        "0 all predicted, 1 some inputs failed, 2 usage error or none could be predicted.",
    )
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER", help="image files or folders")
    p.add_argument("--run", default="runs/cpu-quick", help="run folder (default runs/cpu-quick)")
    p.add_argument(
        "--model", default="best", help="best (default), a member ID or an ensemble name of the run"
    )
    p.add_argument("--top-k", type=int, default=3, help="classes to show per image (default 3)")
    p.add_argument(
        "--tta", action="store_true", help="average with the mirrored image's prediction"
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=cmd_predict)


def cmd_predict(args: argparse.Namespace) -> int:
    from benchmark.data.images import ImageError
    from benchmark.errors import ZoobenchError
    from ensembles.images import collect_images, read_image
    from ensembles.predictor import check_target, load_predictor

    if args.top_k < 1:
        raise ZoobenchError(f"--top-k must be at least 1, got {args.top_k}")
    check_target(args.run, args.model)  # unknown run / model: a usage error before any decoding
    files, errors = collect_images(args.inputs)
    images, good = [], []
    for path in files:
        try:
            images.append(read_image(path))
            good.append(path)
        except ImageError as exc:
            errors.append(exc)
    for exc in errors:
        print(f"zoobench: error: {exc}", file=sys.stderr)
    if not images:
        print("zoobench: error: no input image could be read", file=sys.stderr)
        return EXIT_USAGE
    predictor = load_predictor(args.run, args.model)
    probs = predictor.predict_proba(images, tta=args.tta)
    k = min(args.top_k, probs.shape[1])
    results = []
    for path, row in zip(good, probs, strict=True):
        top = row.argsort()[::-1][:k]
        results.append(
            {
                "file": str(path),
                "label": int(top[0]),
                "class": predictor.class_names[top[0]],
                "top": [
                    {
                        "class": predictor.class_names[i],
                        "label": int(i),
                        "probability": float(row[i]),
                    }
                    for i in top
                ],
            }
        )
    if args.json:
        out = {
            "run": str(args.run),
            "model": predictor.description,
            "tta": bool(args.tta),
            "predictions": results,
            "errors": [str(e) for e in errors],
        }
        print(json.dumps(out, indent=2))
    else:
        print(f"model: {predictor.description}{' (with flip TTA)' if args.tta else ''}")
        for r in results:
            rest = "  ".join(f"{t['class']} {t['probability']:.3f}" for t in r["top"])
            print(f"{r['file']}: {r['class']}  ({rest})")
    if errors:
        total = len(errors) + len(results)
        print(f"zoobench: {len(errors)} of {total} inputs failed", file=sys.stderr)
        return EXIT_SOME_FAILED
    return EXIT_OK
