"""``zoobench data info`` and ``zoobench data grid``: look at a dataset before training on it."""

from __future__ import annotations

import argparse
import json

from tabulate import tabulate


def add_data_options(parser: argparse.ArgumentParser) -> None:
    """Options naming a dataset and its split; shared by every command that loads data."""
    parser.add_argument(
        "--dataset", default="cifar10", help="cifar10, cifar100 or folder (default cifar10)"
    )
    parser.add_argument(
        "--data-dir",
        help="folder with the official batches or a <split>/<class>/*.jpg tree (default: $ZOOBENCH_DATA, "
        "then Keras's cache, then download)",
    )
    parser.add_argument(
        "--val-fraction", type=float, default=0.1, help="validation share of train (default 0.1)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the validation split and subsets"
    )
    parser.add_argument("--train-size", type=int, help="stratified subset of train")
    parser.add_argument("--val-size", type=int, help="stratified subset of validation")
    parser.add_argument("--test-size", type=int, help="stratified subset of test")


def load_from_args(args: argparse.Namespace):
    from benchmark.data.datasets import load

    return load(
        args.dataset,
        data_dir=args.data_dir,
        val_fraction=args.val_fraction,
        seed=args.seed,
        train_size=args.train_size,
        val_size=args.val_size,
        test_size=args.test_size,
    )


def add_commands(sub) -> None:
    data = sub.add_parser("data", help="inspect a dataset: sizes, balance, sample grid")
    data_sub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    info = data_sub.add_parser("info", help="print split sizes, class balance and the data source")
    add_data_options(info)
    info.add_argument("--json", action="store_true", help="print JSON instead of tables")
    info.set_defaults(func=cmd_info, needs_keras=False)

    grid = data_sub.add_parser(
        "grid", help="write a 5x5 grid of sample images with class names (PNG)"
    )
    add_data_options(grid)
    grid.add_argument("--split", choices=("train", "val", "test"), default="train")
    grid.add_argument("--out", default="sample_grid.png", help="PNG path (default sample_grid.png)")
    grid.set_defaults(func=cmd_grid, needs_keras=False)


def cmd_info(args: argparse.Namespace) -> int:
    summary = load_from_args(args).summary()
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    sizes = summary["sizes"]
    print(f"dataset : {summary['dataset']}  ({summary['source']})")
    print(f"location: {summary['location']}")
    print(
        f"images  : {'x'.join(map(str, summary['input_shape']))} uint8, {len(summary['class_names'])} classes"
    )
    print(
        f"split   : train {sizes['train']:,} / val {sizes['val']:,} / test {sizes['test']:,} (seed {summary['seed']})"
    )
    counts = summary["class_counts"]
    rows = [
        [i, name, counts["train"][i], counts["val"][i], counts["test"][i]]
        for i, name in enumerate(summary["class_names"])
    ]
    print(tabulate(rows, headers=["label", "class", "train", "val", "test"], tablefmt="github"))
    return 0


def cmd_grid(args: argparse.Namespace) -> int:
    from reports.grid import sample_grid, sample_indices

    data = load_from_args(args)
    x, y = getattr(data, f"x_{args.split}"), getattr(data, f"y_{args.split}")
    idx = sample_indices(y, 25, seed=args.seed)
    sample_grid(x[idx], y[idx], data.class_names, args.out, title=f"{data.source}, {args.split}")
    print(f"wrote {args.out} (25 {args.split} images from {data.source})")
    return 0
