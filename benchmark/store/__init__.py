"""The run store: the only code that knows a run folder's files. The store itself (``runstore``:
members, ensembles, the leaderboard's entries and one ranking; every file of the folder is written
here), its typed records (``records``: ``run.json``, ``config.json``, ``metrics.json`` and the status
enum), the folder's guard rails (``runfolder``: marker, lock, a safe ``--fresh``), ``run.json`` and
the data arrays (``provenance``), the searches read back after the fact (``tuner_results``) and the
one inference path from a stored model to probabilities on raw pixels (``inference``).

Store layer: may import the training layer, ``config``, ``data``, ``zoo`` and the base modules;
never ensembles, reports or the orchestration. ``benchmark.store.RunStore`` is the public name.
"""

from benchmark.store.runstore import RunStore, file_sha256

__all__ = ["RunStore", "file_sha256"]
