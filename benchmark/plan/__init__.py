"""The plan: a profile's members as tasks, each costed on this machine (``budget``), valued
(``value``: the expected accuracy) and fitted to the time budget by value (``tasks``).

Training layer: may import ``benchmark.train``, ``benchmark.tune``, ``config``, ``data``, ``zoo``
and the base modules.
"""
