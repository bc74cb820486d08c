"""Training one model: the fit loop and its settings, FGSM adversarial training, transfer learning
(feature extraction, fine-tuning, progressive unfreezing) and its extraction runtimes, AdaBoost's
weight arithmetic, and data parallelism.

Training layer (with ``benchmark.tune`` and ``benchmark.plan``): may import ``config``, ``data``,
``zoo`` and the base modules; never the store, ensembles, reports or the orchestration.
"""
