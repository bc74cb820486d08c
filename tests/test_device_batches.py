"""The device input pipeline (JAX, PyTorch) against the host one: the same batches in the same
order, the alternating flip on exactly the right images, the random steps drawn from the same
distributions, repeatable by seed, the split held on the device. Each backend runs in a fresh
interpreter (Keras picks its backend once), on its CPU build."""

from __future__ import annotations

import json

import pytest
from test_backends import _needs, _python

CHECK = r"""
import json
import numpy as np
import keras
from keras import ops
from benchmark.data.augment import first_epoch_flips, make_dataset, validate_policy
from benchmark.data.device_batches import DEVICE_STEPS, fits

n = 1000
rng = np.random.default_rng(0)
x = rng.integers(1, 256, (n, 16, 16, 3)).astype(np.uint8)  # no zero pixel: cutout's are counted
y = np.arange(n) % 10
weights = rng.random(n).astype(np.float32)
out = {}

def batches(policy, on_device, epochs=None, shuffle=True, seed=0, sample_weight=None):
    return make_dataset(x, y, num_classes=10, batch_size=250, policy=validate_policy(policy),
                        shuffle=shuffle, seed=seed, epochs=epochs, on_device=on_device,
                        sample_weight=sample_weight)

def arr(t):
    return np.asarray(ops.convert_to_numpy(t))

dev, host = batches([], True), batches([], False)
out["route"] = [type(dev).__name__, type(host).__name__]
out["on_device"] = type(dev.x).__module__.split(".")[0]
out["same_order"] = all(np.array_equal(arr(dev[i][0]), arr(host[i][0])) and
                        np.array_equal(arr(dev[i][1]), arr(host[i][1])) for i in range(len(dev)))
dev.on_epoch_end(); host.on_epoch_end()
out["same_order_epoch_2"] = bool(np.array_equal(arr(dev[0][0]), arr(host[0][0])))

# the alternating flip: image k mirrored in epoch e exactly when its first-epoch flip != e odd
alt_dev = batches([{"name": "alternating_flip"}], True, epochs=2, shuffle=False)
alt_host = batches([{"name": "alternating_flip"}], False, epochs=2, shuffle=False)
flips = first_epoch_flips(n, 0)
right = []
for epoch in range(2):
    images = np.concatenate([arr(alt_dev[i][0]) for i in range(len(alt_dev))])
    host_images = np.concatenate([arr(alt_host[i][0]) for i in range(len(alt_host))])
    mirrored = np.all(images == x[:, :, ::-1].astype(np.float32), axis=(1, 2, 3))
    plain = np.all(images == x.astype(np.float32), axis=(1, 2, 3))
    right.append(bool(np.array_equal(mirrored, flips != bool(epoch % 2)) and
                      np.all(mirrored != plain) and np.array_equal(images, host_images)))
    alt_dev.on_epoch_end(); alt_host.on_epoch_end()
out["alternating_right"] = right

def stats(on_device):
    # flip: share mirrored; pad_crop: the shift of each image; cutout: zeroed pixels per image
    flip = batches([{"name": "flip"}], on_device, shuffle=False)
    imgs = np.concatenate([arr(flip[i][0]) for i in range(len(flip))])
    flipped = float(np.mean(np.all(imgs == x[:, :, ::-1], axis=(1, 2, 3))))
    position = np.arange(16)[:, None] * 16 + np.arange(16)[None, :] + 1  # 1..256 (256 -> 0: unused)
    ramp = np.broadcast_to(position[None, :, :, None], (n, 16, 16, 3)).astype(np.uint8)
    crop = make_dataset(ramp, y, num_classes=10, batch_size=250, shuffle=False, on_device=on_device,
                        policy=validate_policy([{"name": "pad_crop", "padding": 2}]))
    centre = np.concatenate([arr(crop[i][0]) for i in range(len(crop))])[:, 8, 8, 0].astype(int)
    dy, dx = (centre - 1) // 16 - 8, (centre - 1) % 16 - 8
    cut = batches([{"name": "cutout", "size": 4}], on_device, shuffle=False)
    zeros = np.concatenate([arr(cut[i][0]) for i in range(len(cut))])[..., 0] == 0
    return {"flipped": flipped,
            "dy": np.bincount(dy + 2, minlength=5).tolist(), "dx": np.bincount(dx + 2, minlength=5).tolist(),
            "zeros": sorted(set(zeros.sum(axis=(1, 2)).tolist()))}

out["device"], out["host"] = stats(True), stats(False)
policy = [{"name": "pad_crop"}, {"name": "cutout", "size": 4}, {"name": "mixup", "alpha": 0.2}]
a, b = batches(policy, True, seed=3), batches(policy, True, seed=3)
first, again = a[0], b[0]
out["repeatable"] = bool(np.array_equal(arr(first[0]), arr(again[0])) and np.array_equal(arr(first[1]), arr(again[1])))
out["advances"] = not np.array_equal(arr(a[0][0]), arr(first[0]))  # the next call draws anew
out["soft_labels_sum_to_1"] = bool(np.allclose(arr(first[1]).sum(1), 1.0, atol=1e-5))
w = batches([{"name": "flip"}], True, sample_weight=weights)
rows = np.random.default_rng([0, 0]).permutation(n)[:250]
out["weights_follow"] = bool(np.allclose(arr(w[0][2]), weights[rows]))
out["fallback"] = type(batches([{"name": "randaugment"}], None)).__name__
out["default"] = [keras.backend.backend(), type(batches([{"name": "flip"}], None)).__name__]
out["fits"] = [fits(10, free=100), fits(30, free=100), fits(10**12)]
print("RESULT", json.dumps(out))
"""


@pytest.fixture(scope="module", params=["jax", "torch"])
def checked(request) -> dict:
    _needs(request.param)
    done = _python(CHECK, request.param, hide_tensorflow=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def test_the_device_route_holds_the_split_there_and_keeps_the_host_routes_order(checked):
    assert checked["route"] == ["DeviceBatches", "ArrayBatches"]
    assert checked["on_device"] in ("jaxlib", "jax", "torch")
    assert checked["same_order"] and checked["same_order_epoch_2"]


def test_the_alternating_flip_mirrors_exactly_the_right_images_each_epoch(checked):
    assert checked["alternating_right"] == [True, True]


def test_random_steps_follow_the_host_routes_distributions(checked):
    for route in ("device", "host"):
        s = checked[route]
        assert 0.43 < s["flipped"] < 0.57, (route, s)
        for shifts in (s["dy"], s["dx"]):  # 1,000 images over 5 offsets: 200 each expected
            assert all(150 < count < 250 for count in shifts), (route, shifts)
        assert s["zeros"] == [16], (route, s)  # one 4x4 square inside every image


def test_device_batches_are_seeded_advance_and_carry_weights(checked):
    assert checked["repeatable"] and checked["advances"] and checked["soft_labels_sum_to_1"]
    assert checked["weights_follow"]
    assert checked["fallback"] == "ArrayBatches"  # Python-drawn ops stay on the host
    # unasked, JAX takes the device route everywhere; PyTorch only with a GPU (none here)
    assert checked["default"] in (["jax", "DeviceBatches"], ["torch", "ArrayBatches"])
    assert checked["fits"] == [True, False, True]  # on a CPU the split always fits
