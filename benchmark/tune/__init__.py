"""Hyperparameter search: Keras Tuner oracles and tuners that resume exactly, the common training
hyperparameters, and a member's hp checked against its architecture's declared space.

Training layer: may import ``benchmark.train``, ``config``, ``data``, ``zoo`` and the base modules.
"""
