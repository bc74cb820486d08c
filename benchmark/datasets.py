"""``benchmark.datasets``, the documented name of :mod:`benchmark.data.datasets` (moved there)."""

from benchmark.data.datasets import Dataset, load

__all__ = ["Dataset", "load"]
