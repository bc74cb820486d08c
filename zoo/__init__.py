"""The model zoo: a registry of from-scratch CNNs and ImageNet-pretrained backbones.

    import zoo
    zoo.list_models(kind="scratch")
    model = zoo.build("resnet20")            # default hyperparameters
    model = zoo.build("resnet20", hp=hp)     # a Keras Tuner trial's choices

zoo knows nothing of benchmark: it builds models; training them is benchmark's job.
"""

import os as _os

# Silence TensorFlow's C++ start-up banners unless the user set TF_CPP_MIN_LOG_LEVEL themselves.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from zoo.registry import ModelEntry, ZooError, build, get, list_models, register, unregister  # noqa: E402
from zoo.weights import WeightsUnavailable, no_pretrained_weights  # noqa: E402

__all__ = ["ModelEntry", "ZooError", "build", "get", "list_models", "register", "unregister"]
__all__ += ["WeightsUnavailable", "no_pretrained_weights"]
