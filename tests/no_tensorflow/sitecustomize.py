"""On PYTHONPATH, makes this interpreter behave as if TensorFlow were not installed.

The backend tests run zoobench on JAX and PyTorch through it: any import of TensorFlow fails the
way it does on a JAX- or PyTorch-only machine (find_spec still answers, as torch._dynamo needs).
"""

import importlib.abc
import importlib.machinery
import sys


class _Absent(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Make `import tensorflow` fail as if it were not installed."""

    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            return importlib.machinery.ModuleSpec(name, self)
        return None

    def create_module(self, spec):
        raise ModuleNotFoundError(f"No module named {spec.name!r}", name=spec.name)

    def exec_module(self, module):
        raise ModuleNotFoundError(f"No module named {module.__name__!r}")


sys.meta_path.insert(0, _Absent())
