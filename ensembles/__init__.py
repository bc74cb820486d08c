"""Ensembles: averaging, greedy selection, stacking and bagging over members in the run store.

    from ensembles import build_ensembles, load_predictor
    build_ensembles(RunStore("runs/x"), {"methods": ["greedy"]}, seed=0)   # fit on val, store
    load_predictor("runs/x").predict(images)                               # the exported best

Names are imported lazily: ``import ensembles`` stays cheap and never imports TensorFlow.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AverageEnsemble",
    "GreedyEnsemble",
    "StackingEnsemble",
    "WeightedAverage",
    "build_ensembles",
    "build_fused_model",
    "load_predictor",
    "Predictor",
]

_WHERE = {
    "AverageEnsemble": "ensembles.methods",
    "GreedyEnsemble": "ensembles.methods",
    "StackingEnsemble": "ensembles.methods",
    "WeightedAverage": "ensembles.methods",
    "build_ensembles": "ensembles.build",
    "build_fused_model": "ensembles.export",
    "load_predictor": "ensembles.predictor",
    "Predictor": "ensembles.predictor",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'ensembles' has no attribute {name!r}")
