"""The ``zoobench`` command line: one parser (``main``), a module per group of sub-commands.

Orchestration layer: may import everything below it.
"""

from benchmark.cli.app import main

__all__ = ["main"]
