"""Data: datasets (CIFAR-10/100, class folders), image IO, OpenCV preprocessing, augmentation as
batched ``keras.ops``, generated corruptions, the notebook's encodings and the safe unpickler.

Bottom layer with ``benchmark.config``: may import the package's base modules, ``benchmark.config``
and ``zoo`` (the deblock layer, the cache root); nothing above.
"""
