"""``zoobench export``: write a run's best model, a member or an ensemble as a deployable file.

The artifact is loaded back with its format's runtime and checked against the run's stored test
probabilities before it is put in place (see :mod:`ensembles.deploy`). Exit status 0 on success,
2 on a usage error (unknown run, model or format, a missing package, an existing --out).
"""

from __future__ import annotations

import argparse
import json


def add_commands(sub) -> None:
    from ensembles.deploy import DEFAULT_IMAGES, FORMATS  # numpy only: no Keras before a handler

    p = sub.add_parser(
        "export",
        help="export a run's best model, a member or an ensemble (keras, saved_model, onnx, litert)",
        description="Write one model of a run as a .keras file, a TensorFlow SavedModel folder, an "
        "ONNX file or a LiteRT (.tflite) file taking float32 RGB images (values 0..255) at the "
        "run's image size, then load it back with that format's runtime and compare its "
        "probabilities on the run's stored test images with the stored ones.",
    )
    p.add_argument("run", metavar="RUN", help="run folder, e.g. runs/cpu-quick")
    p.add_argument(
        "--model", default="best", help="best (default), a member ID or an ensemble name of the run"
    )
    p.add_argument(
        "--format",
        dest="fmt",
        choices=tuple(FORMATS),
        default="keras",
        help="artifact format (default keras); onnx and litert need the extras of the same name",
    )
    p.add_argument(
        "--out",
        required=True,
        metavar="PATH",
        help="where to write it: a .keras / .onnx / .tflite file, or a folder for saved_model",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="replace an earlier export at --out (recognised by its manifest; anything else is "
        "refused)",
    )
    p.add_argument(
        "--tolerance",
        type=float,
        default=None,
        help="max |probability difference| accepted in the check (default: "
        + ", ".join(f"{f.name} {f.tolerance:g}" for f in FORMATS.values())
        + ")",
    )
    p.add_argument(
        "--images",
        type=int,
        default=DEFAULT_IMAGES,
        metavar="N",
        help=f"stored test images compared after writing (default {DEFAULT_IMAGES})",
    )
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from benchmark.formatting import count
    from ensembles.deploy import export_model
    from ensembles.predictor import check_target

    check_target(args.run, args.model)  # unknown run / model: one line before Keras works
    info = export_model(
        args.run,
        args.model,
        args.fmt,
        out=args.out,
        force=args.force,
        tolerance=args.tolerance,
        images=args.images,
    )
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    entry = info["entry"]
    shape = "x".join(str(s) for s in info["input"]["shape"][1:])
    print(f"exported {entry['kind']} {entry['name']!r} ({args.model}) of {info['run']}")
    print(f"  path:     {info['path']}")
    print(f"  format:   {info['format']}")
    print(f"  size:     {count(info['size_bytes'])}B")
    print(
        f"  input:    float32 RGB {shape}, values 0..255; output: {info['output']['shape'][1]} "
        "class probabilities"
    )
    print(
        f"  check:    {info['images_compared']} stored test images, max |diff| "
        f"{info['max_abs_diff']:.2g} (tolerance {info['tolerance']:g})"
    )
    print(f"  manifest: {info['manifest']}")
    return 0
