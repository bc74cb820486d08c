"""The ``zoobench`` command line: one parser, sub-commands contributed by each part's CLI module.

Each module in ``COMMAND_MODULES`` has ``add_commands(subparsers)``, which adds its sub-commands and
sets ``func`` (called with the parsed args, returning an exit status). Modules import Keras and its
backend only inside their handlers, so ``zoobench --help`` answers at once and ``--backend`` can
still choose the backend before Keras starts.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from zoo.backend import BACKENDS

COMMAND_MODULES = (
    "benchmark.cli.zoo",
    "benchmark.cli.data",
    "benchmark.cli.run",
    "benchmark.cli.report",
    "benchmark.cli.predict",
    "benchmark.cli.export",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zoobench",
        description="Ensemble and transfer-learning benchmarking suite for image classification.",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log progress and TensorFlow's messages"
    )
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks on errors")
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        help="Keras backend to run on (default: $KERAS_BACKEND, else Keras's config, tensorflow)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verbose:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
    else:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if args.debug:  # the tracebacks of failures a run survives (members, ensembles, report)
        for name in ("benchmark", "ensembles", "reports"):
            logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        from zoo import backend

        backend.select(args.backend)
        if getattr(args, "needs_keras", True):
            from zoo.quiet import import_backend_quietly

            import_backend_quietly()
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("zoobench: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `zoobench runs | head`: the reader left; nothing more to say
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python's own flush at exit must not fail again
        return 1
    except Exception as exc:
        if args.debug:
            raise
        if _is_user_error(exc):  # the user's mistakes get one line naming the problem
            print(f"zoobench: error: {exc}", file=sys.stderr)
            return 2
        print(
            f"zoobench: internal error: {type(exc).__name__}: {exc} (rerun with --debug)",
            file=sys.stderr,
        )
        return 1


def _is_user_error(exc: Exception) -> bool:
    from benchmark.errors import ZoobenchError
    from zoo.registry import ZooError

    return isinstance(exc, (ZoobenchError, ZooError, FileNotFoundError))
