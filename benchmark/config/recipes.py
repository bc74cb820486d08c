"""Training recipes: named sets of ``[training]`` options and an augmentation policy.

A zoo entry may name its recipe (``@register(..., recipe="airbench94")``); a profile's member of that
architecture trains with it unless the member says otherwise: the member's training is the
defaults, then the profile's ``[training]`` table, then the recipe, then the member's own
``training`` table (``recipe = "none"`` there skips the recipe; ``recipe = "NAME"`` picks another).
The expanded options are what the member's config and ID record, with the recipe's name beside them.

The airbench recipes are the speed records' (KellerJordan/cifar10-airbench: ``airbench94.py``,
``airbench95.py``, ``airbench96.py``) in Keras's terms. airbench states its learning rate and weight
decay per 1,024 images and sums the loss over a batch; PyTorch's SGD couples the decay to the
momentum. Keras averages the loss and decays weights apart from the gradient, so :func:`_airbench`
converts: ``learning_rate = lr / (1 + 1 / (1 - momentum)) * batch_size / 1024`` and a decay that
removes the same share of each weight per step. Scale ``learning_rate`` linearly with
``batch_size`` when you change it; the decay needs no change. The faster batch-norm bias is part of
the network (``zoo.record_layers.ScaleFreeBatchNorm``), the whitening layer too.
"""

from __future__ import annotations

from typing import Any

from benchmark.errors import ZoobenchError

NO_RECIPE = "none"


def _airbench(
    lr_per_1024: float,
    weight_decay_per_1024: float,
    *,
    epochs: int,
    batch_size: int,
    momentum: float = 0.85,
    translate: int = 2,
    cutout: int = 0,
    ema: float = 0.99,
    tta: str = "flip-translate",
) -> dict[str, Any]:
    """A recipe from airbench's decoupled hyperparameters (per 1,024 images)."""
    kilostep = 1.0 + 1.0 / (1.0 - momentum)  # airbench's momentum-coupled step size
    learning_rate = lr_per_1024 / kilostep * batch_size / 1024
    decay_per_step = weight_decay_per_1024 / kilostep / (1.0 - momentum) * batch_size / 1024
    augment: list[dict[str, Any]] = [
        {"name": "alternating_flip"},
        {"name": "pad_crop", "padding": translate},
    ]
    if cutout:
        augment.append({"name": "cutout", "size": cutout, "probability": 1.0})
    return {
        "training": {
            "epochs": epochs,
            "batch_size": batch_size,
            "optimizer": "sgd",
            "momentum": momentum,
            "nesterov": True,
            "learning_rate": round(learning_rate, 6),
            "weight_decay": round(decay_per_step / learning_rate, 6),
            "schedule": "triangle",
            "label_smoothing": 0.2,
            "early_stopping_patience": 0,  # a fixed schedule, scored with its averaged weights
            "ema": ema,
            "tta": tta,
            "precision": "auto",  # bf16 on an accelerator, float32 on a CPU
        },
        "augment": augment,
    }


RECIPES: dict[str, dict[str, Any]] = {
    # The records, at their batch size of 1,024 (an accelerator's).
    "airbench94": _airbench(11.5, 0.0153, epochs=10, batch_size=1024, ema=0.95),
    "airbench95": _airbench(10.0, 0.0153, epochs=15, batch_size=1024, ema=0.95),
    "airbench96": _airbench(
        9.0, 0.012, epochs=37, batch_size=1024, translate=4, cutout=12, ema=0.95
    ),
    # The same method sized for a CPU (fastnet, airbench94 at 3/8 width): a 2-core CPU trains
    # ~900 images/s, so an epoch is a minute and 4 epochs at batch 1,024 are only 176 steps; batch
    # 128 gives 8x the steps (docs/results/speedrun-fastnet.json: the measurement).
    "fastnet": _airbench(11.5, 0.0153, epochs=4, batch_size=128, ema=0.99),
    # Fine-tuning an ImageNet EfficientNet-Lite at 224 px (members with strategy "fine-tuning" or
    # "progressive-unfreezing"; benchmark.train.transfer): AdamW, whose first stage trains the
    # head at 1e-3 and whose later stages train the backbone at the transfer option
    # fine_tune_lr_factor (0.1) of it, the pretrained weights' usual 1e-4; each stage warms up for
    # one epoch and follows a cosine; batch norm stays frozen (its ImageNet statistics, as the
    # strategies always do); label smoothing, flips and a 4-px translate at the data's 32 px
    # before the model resizes; the mirror averaged in at test time; bf16 on an accelerator.
    "lite-finetune": {
        "training": {
            "epochs": 10,
            "batch_size": 128,
            "optimizer": "adamw",
            "learning_rate": 1e-3,
            "weight_decay": 0.02,
            "schedule": "cosine",
            "warmup_epochs": 1.0,
            "label_smoothing": 0.1,
            "early_stopping_patience": 0,
            "tta": "flip",
            "precision": "auto",
        },
        "augment": [{"name": "flip"}, {"name": "pad_crop", "padding": 4}],
    },
}


def recipe(name: str) -> dict[str, Any]:
    """The recipe called ``name``: {"training": {...}, "augment": [...]} (copies)."""
    if name not in RECIPES:
        raise ZoobenchError(
            f"unknown recipe {name!r} (known: {', '.join(sorted(RECIPES))}, or {NO_RECIPE!r})"
        )
    found = RECIPES[name]
    return {"training": dict(found["training"]), "augment": [dict(s) for s in found["augment"]]}
