"""The FLOP cost model: a device rate calibrated once and kept under the device's name, members
costed from their FLOPs without a probe, live epochs correcting the estimate, and a plan of the
GPU profile that compiles no member once the device's rate is recorded."""

from __future__ import annotations

import keras
import pytest

from benchmark.errors import ZoobenchError
from benchmark.plan import budget, costmodel
from benchmark.plan.budget import Load, Timing
from zoo.flops import count_flops

SPEC = {"architecture": "tiny", "hp": {}, "shape": [32, 32, 3], "batch": 64, "strategy": None}


def conv_net(width: int):
    """A one-convolution net whose FLOPs grow with ``width``."""
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(width, 3, padding="same")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10)(x))


def no_timing(*args, **kwargs):
    raise AssertionError("a model was timed")


def test_the_device_rate_is_measured_once_and_then_read_under_the_devices_name(calibration):
    calls = []

    def timer(factory, shape, classes, batch, steps, windows):
        calls.append(factory())  # the calibration net, as the real timer builds it
        return Timing(train=100.0, infer=400.0, build=0.1, load=Load())

    rate = costmodel.device_rate("float32", timer=timer)
    forward = count_flops(calls[0])
    assert rate.measured and rate.train == pytest.approx(100.0 * 3 * forward)
    assert rate.infer == pytest.approx(400.0 * forward)
    again = costmodel.device_rate("float32", timer=no_timing)
    assert not again.measured and again.train == pytest.approx(rate.train)
    stored = budget._read_calibration(calibration)[costmodel.device_key("float32")]
    assert stored["device"] == costmodel.device_name() and stored["batch"] == 64
    with pytest.raises(AssertionError):  # another policy is another rate: measured afresh
        costmodel.device_rate("mixed_bfloat16", timer=no_timing)


def test_members_are_costed_in_proportion_to_their_flops_without_a_probe(calibration, monkeypatch):
    monkeypatch.setattr(budget, "_time_model", no_timing)
    costmodel.record_rate("float32", train_flops=3e9, infer_flops=2e9, batch=64)
    small = costmodel.throughput(SPEC, lambda: conv_net(8), 64, "float32")
    big_spec = {**SPEC, "architecture": "tiny-wide"}
    big = costmodel.throughput(big_spec, lambda: conv_net(32), 64, "float32")
    assert small.source == "flops" and not small.measured
    flops = count_flops(conv_net(8))
    assert small.train == pytest.approx(3e9 / (3 * flops))
    assert small.infer == pytest.approx(2e9 / flops)
    assert big.train == pytest.approx(small.train * count_flops(conv_net(8)) / _flops(32))
    entry = budget._read_calibration(calibration)[budget.calibration_key(SPEC)]
    assert entry["flops"] == flops and entry["source"] == "flops"
    # the second plan builds nothing either: the FLOPs are stored with the figure
    again = costmodel.throughput(SPEC, no_timing, 64, "float32")
    assert again.train == pytest.approx(small.train)
    # a device rate measured again (e.g. once the machine is quiet) re-prices every estimate
    costmodel.record_rate("float32", train_flops=6e9, infer_flops=2e9, batch=64)
    assert costmodel.throughput(SPEC, no_timing, 64, "float32").train == pytest.approx(
        2 * small.train
    )


def _flops(width: int) -> int:
    return count_flops(conv_net(width))


def test_a_probe_does_not_take_a_flop_estimate_for_a_measurement(calibration, monkeypatch):
    costmodel.record_rate("float32", train_flops=3e9, infer_flops=2e9, batch=64)
    costmodel.throughput(SPEC, lambda: conv_net(8), 64, "float32")
    timed = []

    def timer(*args):
        timed.append(args)
        return Timing(train=123.0, infer=456.0, build=0.0, load=Load())

    monkeypatch.setattr(budget, "_time_model", timer)
    tp = budget.probe(lambda: conv_net(8), (32, 32, 3), 10, 64, SPEC)
    assert timed and tp.train == 123.0 and tp.source == "probe"
    # and a measured figure wins over the FLOP model from then on
    assert costmodel.throughput(SPEC, no_timing, 64, "float32").train == 123.0


def test_live_epochs_correct_a_flop_estimate_either_way_but_not_for_noise(calibration):
    costmodel.record_rate("float32", train_flops=3e9, infer_flops=2e9, batch=64)
    first = costmodel.throughput(SPEC, lambda: conv_net(8), 64, "float32").train
    assert not budget.observe_epochs(SPEC, 1.05)  # within FLOPS_OFF_BY: kept
    assert budget.observe_epochs(SPEC, 0.5)  # twice slower than estimated: replaced
    entry = budget._read_calibration(calibration)[budget.calibration_key(SPEC)]
    assert entry["source"] == "live" and entry["train"] == pytest.approx(first * 0.5)
    # a live figure is a measurement: only a much faster run replaces it now, as for a probe
    assert not budget.observe_epochs(SPEC, 0.5)


def test_a_small_batch_costs_more_per_image_on_an_accelerator_only(monkeypatch):
    rate = costmodel.DeviceRate(1e12, 1e12, batch=256, policy="mixed_bfloat16")
    monkeypatch.setattr(costmodel, "on_accelerator", lambda: True)
    assert rate.batch_factor(256) == pytest.approx(1.0)
    assert rate.batch_factor(32) < 0.6 < rate.batch_factor(128) < 1.0
    monkeypatch.setattr(costmodel, "on_accelerator", lambda: False)
    assert rate.batch_factor(32) == 1.0


def test_costing_is_checked_and_auto_probes_on_a_cpu(monkeypatch):
    monkeypatch.setattr(costmodel, "on_accelerator", lambda: False)
    assert not costmodel.use_flops("auto") and costmodel.use_flops("flops")
    monkeypatch.setattr(costmodel, "on_accelerator", lambda: True)
    assert costmodel.use_flops("auto") and not costmodel.use_flops("probe")
    with pytest.raises(ZoobenchError, match="costing: 'fast' is not one of auto, probe, flops"):
        costmodel.use_flops("fast")


def test_the_gpu_profile_plans_from_a_recorded_calibration_without_any_probe(
    calibration, monkeypatch, tiny_jpg, capsys
):
    from benchmark.cli.app import main

    def refuse(*args, **kwargs):
        raise AssertionError("a probe ran")

    monkeypatch.setattr(budget, "probe", refuse)
    monkeypatch.setattr(budget, "_time_model", refuse)
    for policy in ("float32", "mixed_bfloat16"):
        costmodel.record_rate(policy, train_flops=4e12, infer_flops=8e12, batch=256)
    status = main(["run", "gpu-quick", "--plan", "--data-dir", str(tiny_jpg)])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "estimates come from the members' FLOPs over this device's calibrated rate" in out
    assert "nothing was trained" in out
    stored = budget._read_calibration(calibration)
    costed = [e for e in stored.values() if isinstance(e, dict) and e.get("source") == "flops"]
    assert len(costed) >= 3 and all(e["flops"] > 0 for e in costed)
