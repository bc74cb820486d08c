"""Member costs from FLOPs and one device rate, so a plan on an accelerator compiles no member.

A probe (``benchmark.plan.budget.probe``) times the real model: exact, but on an accelerator each
probe compiles its model under XLA, and a GPU run spent 2m33s of its 6 minutes doing so
(docs/results/gpu-quick.json). Here a member's cost is its FLOPs per image, counted from the built
model's layers (``zoo.flops``; building costs no compile and no weight file), divided into a rate
that the device sustains: FLOPs per second of training and of inference, measured once per device,
backend, library version and dtype policy on one small calibration network
(:func:`calibration_net`) and kept in the calibration file under the device's name. Training a
member costs 3x its forward FLOPs (forward, then the gradients of activations and of weights).

Batch: on an accelerator a batch much smaller than the calibration's leaves the device idle part
of the time; the rate is scaled by ``b / (b + HALF_RATE_BATCH)`` against the calibration batch's
figure (a saturating curve; its constant is an assumption until a GPU measures it). On a CPU the
rate is flat in the batch. Precision enters through the dtype policy the rate was measured under.

The figures a FLOP estimate gives are stored like a probe's (``"source": "flops"``), so the live
epoch times of a finished member correct them as they correct a loaded probe, in both directions
(``benchmark.plan.budget.observe_epochs``).
"""

from __future__ import annotations

import logging
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from benchmark.config.schema import COSTINGS
from benchmark.plan import budget

log = logging.getLogger(__name__)

TRAIN_FLOPS_PER_FORWARD = 3.0  # forward + backward (activations' and weights' gradients)
HALF_RATE_BATCH = 32  # accelerators: the batch at which half the device's rate is reached
CALIBRATION_BATCH = {"cpu": 64, "accelerator": 256}


def calibration_net(input_shape=(32, 32, 3), num_classes: int = 10):
    """The calibration model: four 3x3 convolutions (64-128-256-256 channels) with batch norm and
    two poolings, about 0.45 GFLOPs an image, built from Keras layers alone so that its figure
    means the same on every version of the zoo."""
    import keras
    from keras import layers

    inputs = keras.Input(input_shape)
    x = layers.Rescaling(1.0 / 255)(inputs)
    for width, pool in ((64, False), (128, True), (256, True), (256, False)):
        x = layers.Conv2D(width, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.Activation("relu")(x)
        if pool:
            x = layers.MaxPooling2D()(x)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="zoobench_calibration")


def device_name() -> str:
    """The device a plan runs on: the first accelerator's name, else the CPU's model and cores."""
    from zoo import backend

    accelerators = backend.accelerators()
    if accelerators:
        return f"{accelerators[0]} x{len(accelerators)}"
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model} ({os.cpu_count()} cores)"


def device_key(policy: str) -> str:
    """The calibration file's key of this device's rate under ``policy`` on this backend."""
    from zoo import backend

    return f"device|{backend.name()}-{backend.library_version()}|{device_name()}|{policy}"


def on_accelerator() -> bool:
    from zoo import backend

    return bool(backend.accelerators())


def use_flops(costing: str) -> bool:
    """Whether members are costed from FLOPs (``costing`` "flops", or "auto" on an accelerator)
    rather than probed one by one ("probe", or "auto" on a CPU, where a probe compiles nothing
    costly and is the better figure: docs/results/cost-model.json)."""
    if costing not in COSTINGS:
        from benchmark.errors import ZoobenchError

        raise ZoobenchError(f"costing: {costing!r} is not one of {', '.join(COSTINGS)}")
    return costing == "flops" or (costing == "auto" and on_accelerator())


@dataclass(frozen=True)
class DeviceRate:
    """FLOPs per second this device sustains under one dtype policy, at ``batch``."""

    train: float
    infer: float
    batch: int
    policy: str
    measured: bool = True  # False: read from the calibration file
    loaded: bool = False

    def batch_factor(self, batch: int) -> float:
        """How much of the calibration batch's rate a batch of ``batch`` gets (1.0 on a CPU)."""
        if not on_accelerator():
            return 1.0
        at = batch / (batch + HALF_RATE_BATCH)
        return at / (self.batch / (self.batch + HALF_RATE_BATCH))


def device_rate(
    policy: str = "float32",
    *,
    steps: int = 3,
    windows: int = budget.PROBE_WINDOWS,
    timer: Callable[..., budget.Timing] | None = None,
) -> DeviceRate:
    """This device's rate under ``policy``: from the calibration file, else measured once on
    :func:`calibration_net` and stored under :func:`device_key`. A rate measured under load is
    measured again once the machine is quiet, as a probe's is."""
    path, key = budget.calibration_path(), device_key(policy)
    entry = budget._read_calibration(path).get(key)
    if _has_rate(entry):
        loaded = bool(entry.get("loaded", False))
        if not loaded or not budget.machine_quiet():
            return DeviceRate(
                float(entry["train_flops"]),
                float(entry["infer_flops"]),
                int(entry["batch"]),
                policy,
                measured=False,
                loaded=loaded,
            )
    from benchmark.train.training import precision_scope
    from zoo.flops import count_flops

    batch = CALIBRATION_BATCH["accelerator" if on_accelerator() else "cpu"]
    shape, flops = (32, 32, 3), {}

    def factory():
        with precision_scope(policy):
            model = calibration_net(shape)
        flops["forward"] = count_flops(model)
        return model

    timing = (timer or budget._time_model)(factory, shape, 10, batch, steps, windows)
    forward = float(flops["forward"])
    rate = DeviceRate(
        timing.train * TRAIN_FLOPS_PER_FORWARD * forward,
        timing.infer * forward,
        batch,
        policy,
        loaded=timing.load.loaded,
    )
    log.info(
        "calibrated %s under %s: %.1f GFLOP/s training, %.1f GFLOP/s inference",
        device_name(),
        policy,
        rate.train / 1e9,
        rate.infer / 1e9,
    )

    def update(stored: dict[str, Any]) -> None:
        stored[key] = {
            "train_flops": rate.train,
            "infer_flops": rate.infer,
            "batch": batch,
            "policy": policy,
            "device": device_name(),
            "model_flops": forward,
            "measured_at": time.time(),
            "loaded": rate.loaded,
        }

    budget._update_calibration(path, update)
    return rate


def record_rate(policy: str, train_flops: float, infer_flops: float, batch: int) -> None:
    """Store a device rate measured elsewhere (a calibration recorded on a GPU machine, a test)."""
    key = device_key(policy)

    def update(stored: dict[str, Any]) -> None:
        stored[key] = {
            "train_flops": float(train_flops),
            "infer_flops": float(infer_flops),
            "batch": int(batch),
            "policy": policy,
            "device": device_name(),
            "measured_at": time.time(),
            "loaded": False,
        }

    budget._update_calibration(budget.calibration_path(), update)


def _has_rate(entry: Any) -> bool:
    try:
        return (
            isinstance(entry, dict)
            and float(entry["train_flops"]) > 0
            and float(entry["infer_flops"]) > 0
            and int(entry["batch"]) > 0
        )
    except (KeyError, TypeError, ValueError):
        return False


def member_flops(spec: dict[str, Any], factory: Callable[[], Any]) -> tuple[int, float]:
    """(FLOPs of one image's forward pass, seconds the build took) of the model ``factory``
    builds, kept under the probe ``spec``'s key so the next plan builds nothing."""
    path, key = budget.calibration_path(), budget.calibration_key(spec)
    entry = budget._read_calibration(path).get(key)
    if isinstance(entry, dict) and isinstance(entry.get("flops"), int) and entry["flops"] > 0:
        return int(entry["flops"]), float(entry.get("build", 0.0) or 0.0)
    import keras

    from zoo.flops import count_flops
    from zoo.weights import no_pretrained_weights

    start = time.perf_counter()
    with no_pretrained_weights():  # the FLOPs need the graph, not the weights
        model = factory()
    build = time.perf_counter() - start
    flops = int(count_flops(model))
    keras.backend.clear_session()

    def update(stored: dict[str, Any]) -> None:
        found = stored.get(key) if isinstance(stored.get(key), dict) else {"spec": spec}
        found["flops"] = flops
        found.setdefault("build", build)
        stored[key] = found

    budget._update_calibration(path, update)
    return flops, build


def throughput(
    spec: dict[str, Any], factory: Callable[[], Any], batch: int, policy: str
) -> budget.Throughput:
    """Images per second of the model ``factory`` builds, from its FLOPs and the device's rate.

    A figure already stored for ``spec`` (a probe, or live epochs) wins: it measured the real
    model. Otherwise the FLOP estimate, made afresh from the device's current rate, is stored as
    that figure (``"source": "flops"``) so live epochs can correct it."""
    stored = budget._read_calibration(budget.calibration_path()).get(budget.calibration_key(spec))
    if budget._has_figures(stored) and stored.get("source") != "flops":
        return budget.Throughput(
            float(stored["train"]),
            float(stored["infer"]),
            float(stored.get("build", 0.0) or 0.0),
            measured=False,
            loaded=bool(stored.get("loaded", False)),
            source=str(stored.get("source", "probe")),
        )
    flops, build = member_flops(spec, factory)
    rate = device_rate(policy)
    train = rate.train * rate.batch_factor(batch) / (TRAIN_FLOPS_PER_FORWARD * max(flops, 1))
    infer = rate.infer / max(flops, 1)
    key = budget.calibration_key(spec)

    def update(stored: dict[str, Any]) -> None:
        found = stored.get(key) if isinstance(stored.get(key), dict) else {"spec": spec}
        found.update(train=train, infer=infer, source="flops", loaded=False)
        found["measured_at"] = time.time()
        stored[key] = found

    budget._update_calibration(budget.calibration_path(), update)
    return budget.Throughput(
        train, infer, build, measured=False, loaded=rate.loaded, source="flops"
    )
