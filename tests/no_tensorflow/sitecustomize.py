"""On PYTHONPATH, makes this interpreter behave as if TensorFlow (or more) were not installed.

The backend tests run zoobench on JAX and PyTorch through it: any import of TensorFlow fails the
way it does on a JAX- or PyTorch-only machine (find_spec still answers, as torch._dynamo needs).
``ZOOBENCH_TEST_HIDDEN`` (comma-separated top-level names, default ``tensorflow``) hides others:
the schema tests hide every backend and Keras.
"""

import importlib.abc
import importlib.machinery
import os
import sys

HIDDEN = tuple(n for n in os.environ.get("ZOOBENCH_TEST_HIDDEN", "tensorflow").split(",") if n)


class _Absent(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Make `import tensorflow` (and the other hidden names) fail as if it were not installed."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HIDDEN:
            return importlib.machinery.ModuleSpec(name, self)
        return None

    def create_module(self, spec):
        raise ModuleNotFoundError(f"No module named {spec.name!r}", name=spec.name)

    def exec_module(self, module):
        raise ModuleNotFoundError(f"No module named {module.__name__!r}")


sys.meta_path.insert(0, _Absent())
