"""``zoobench zoo list`` and ``zoobench zoo show``: what the model zoo holds and what each model is."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys

from tabulate import tabulate


def add_commands(sub) -> None:
    from zoo.registry import KINDS

    zoo_parser = sub.add_parser("zoo", help="list the model zoo's architectures or show one")
    zoo_sub = zoo_parser.add_subparsers(dest="zoo_command", metavar="ACTION", required=True)

    lst = zoo_sub.add_parser("list", help="every architecture with params and FLOPs per image")
    lst.add_argument("pattern", nargs="?", help="shell wildcard on the name, e.g. 'resnet*'")
    lst.add_argument("--kind", choices=KINDS, help="only scratch or only pretrained models")
    lst.add_argument("--family", help="only this family (e.g. resnet, densenet)")
    lst.add_argument("--json", action="store_true", help="print JSON instead of a table")
    lst.add_argument(
        "--refresh", action="store_true", help="recount every model instead of the cached counts"
    )
    # Keras is imported only when the cached catalogue cannot answer (a model has to be built).
    lst.set_defaults(func=cmd_list, needs_keras=False)

    show = zoo_sub.add_parser(
        "show", help="description, paper, search space and layers of one model"
    )
    show.add_argument("name", help="architecture name, e.g. resnet20")
    show.add_argument(
        "--layers", action="store_true", help="print every layer, not only the counts"
    )
    show.add_argument("--json", action="store_true", help="print JSON instead of text")
    show.set_defaults(func=cmd_show)


def cmd_list(args: argparse.Namespace) -> int:
    from zoo.catalog import catalog

    # Builders may print (Keras reports weight downloads on stdout): keep stdout for the answer.
    with contextlib.redirect_stdout(sys.stderr):
        rows = catalog(args.pattern, kind=args.kind, family=args.family, refresh=args.refresh)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no architecture matches")
        return 0
    table = [
        [
            r["name"],
            r["kind"],
            r["family"],
            _count(r["params"]),
            _count(r["flops"]),
            f"{r['input_size']}px",
            _short(r["note"]),
        ]
        for r in rows
    ]
    headers = ["name", "kind", "family", "params", "FLOPs/image", "input", "note"]
    if not any(r["note"] for r in rows):
        table, headers = [t[:-1] for t in table], headers[:-1]
    print(tabulate(table, headers=headers, tablefmt="github"))
    print("\nFLOPs = 2 x multiply-adds of conv/dense layers, one image at the listed input size.")
    return 0


def _short(note: str, limit: int = 60) -> str:
    return note if len(note) <= limit else note[: limit - 3] + "..."


def cmd_show(args: argparse.Namespace) -> int:
    from zoo.catalog import details

    with contextlib.redirect_stdout(sys.stderr):
        info = details(args.name)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    print(f"{info['name']}: {info['description']}")
    print(
        f"kind    : {info['kind']} (family {info['family']}), designed for {info['input_size']}px"
    )
    print(f"paper   : {info['paper'] or '-'}")
    print(f"source  : {info['module']}")
    at = info.get("default_input_size")
    at = f" (default model computes at {at}px)" if at and at != info["input_size"] else ""
    print(f"params  : {_count(info['params'])}   FLOPs/image: {_count(info['flops'])}{at}")
    for key, value in info["extra"].items():
        if key == "reference_accuracy":  # a plugin's declared planner prior
            acc, epochs, images = value
            value = f"{acc:.1%} val. accuracy after {epochs} epochs on {images:,} images (declared)"
            key = "prior"
        print(f"{key:8s}: {value}")
    from benchmark.plan.value import priors

    for p in (p for p in priors() if p.architecture == info["name"]):
        ref = p.reference
        print(
            f"prior   : {ref.accuracy:.1%} val. accuracy, {p.label()}, {ref.epochs:g} epochs on "
            f"{ref.train_images:,} images ({ref.basis}: {ref.source})"
        )
    if info["kind"] == "pretrained":
        from benchmark.config.schema import STRATEGIES

        print(f'transfer: {", ".join(STRATEGIES)} (a member\'s strategy = "...")')
    if info.get("weights"):
        w = info["weights"]
        print(f"origin  : {w['source']}")
        if "available" in w:
            where = w["path"] if w["available"] else f"not here ({w['reason']})"
            print(f"here    : {where}")
    if info["note"]:
        print(f"note    : {info['note']}")
    if info["search_space"]:
        print("\nsearch space (defaults build the registered model):")
        rows = [[p["name"], p["type"], p["default"], p["domain"]] for p in info["search_space"]]
        print(
            tabulate(
                rows, headers=["hyperparameter", "type", "default", "values"], tablefmt="github"
            )
        )
    if args.layers and info["layers"]:
        print(f"\nlayers ({len(info['layers'])}):")
        rows = [
            [r["name"], r["type"], r["output_shape"], f"{r['params']:,}"] for r in info["layers"]
        ]
        print(
            tabulate(rows, headers=["layer", "type", "output shape", "params"], tablefmt="github")
        )
    elif info["layer_types"]:
        counts = ", ".join(f"{n} {t}" for t, n in info["layer_types"].items())
        print(f"\nlayers: {len(info['layers'])} ({counts}); --layers lists them")
    return 0


def _count(value: float | None) -> str:
    from benchmark.formatting import count

    return "n/a" if value is None else count(value)
