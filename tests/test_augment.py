"""Augmentation steps as batched keras.ops: each checked for what it must do, on real pixels.

They run on whichever backend Keras was started with (the backend matrix in CI runs them on each).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from benchmark.data.augment import available_steps, build_policy, make_dataset, validate_policy
from benchmark.errors import ZoobenchError


def _run(policy, images, labels=None, num_classes=10, seed=0):
    labels = np.zeros(len(images), np.int64) if labels is None else labels
    x = keras.ops.convert_to_tensor(images, "float32")
    y = keras.ops.one_hot(keras.ops.convert_to_tensor(labels), num_classes)
    xo, yo = build_policy(policy, seed)(x, y)
    return keras.ops.convert_to_numpy(xo), keras.ops.convert_to_numpy(yo)


def _batches(dataset):
    """(images, labels) numpy pairs of one epoch of a tf.data.Dataset or a PyDataset."""
    if hasattr(dataset, "as_numpy_iterator"):
        return list(dataset.as_numpy_iterator())
    return [
        (keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
        for a, b in (dataset[i] for i in range(len(dataset)))
    ]


def test_cutout_zeroes_exactly_one_square_of_the_given_size():
    images = np.full((64, 32, 32, 3), 200.0, np.float32)
    out, labels = _run([{"name": "cutout", "size": 8}], images)
    for img in out:
        zero = np.all(img == 0, axis=-1)
        assert zero.sum() == 64
        rows, cols = np.flatnonzero(zero.any(1)), np.flatnonzero(zero.any(0))
        assert (rows.max() - rows.min() + 1, cols.max() - cols.min() + 1) == (8, 8)
    assert np.all(labels.sum(1) == 1)


def test_mixup_mixes_images_and_labels_with_the_same_weights():
    num = 32
    labels = np.arange(num) % 10
    images = np.broadcast_to((labels * 20.0)[:, None, None, None], (num, 32, 32, 3)).astype(
        np.float32
    )
    out, soft = _run([{"name": "mixup", "alpha": 0.4}], images, labels)
    np.testing.assert_allclose(soft.sum(1), 1.0, atol=1e-6)
    assert (soft.max(1) < 0.999).any()  # some rows really are mixed
    expected_pixel = soft @ (np.arange(10) * 20.0)  # each class's constant image value, weighted
    np.testing.assert_allclose(out[:, 5, 5, 0], expected_pixel, atol=1e-3)


def test_cutmix_label_weights_equal_pasted_area():
    num = 32
    labels = np.arange(num) % 10
    images = np.broadcast_to((labels * 20.0 + 1)[:, None, None, None], (num, 32, 32, 3)).astype(
        np.float32
    )
    out, soft = _run([{"name": "cutmix", "alpha": 1.0}], images, labels)
    np.testing.assert_allclose(soft.sum(1), 1.0, atol=1e-6)
    own_share = (out[..., 0] == images[:, :1, :1, 0]).mean(axis=(1, 2))
    # The own label keeps exactly the share of pixels that were not pasted over (a partner of the
    # same class pastes identical pixels, and then both sides are 1).
    np.testing.assert_allclose(soft[np.arange(num), labels], own_share, atol=1e-6)
    assert (own_share < 1).any()


def test_random_erasing_fills_a_rectangle_within_area_bounds(real_images):
    x = real_images[0][:50].astype(np.float32)
    out, _ = _run(
        [{"name": "random_erasing", "probability": 1.0, "min_area": 0.1, "max_area": 0.2}], x
    )
    changed = np.any(out != x, axis=-1)
    for mask in changed:
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        box_area = (np.ptp(rows) + 1) * (np.ptp(cols) + 1)
        assert 0.07 * 1024 <= box_area <= 0.25 * 1024


def test_flip_returns_each_image_or_its_mirror(real_images):
    x = real_images[0][:40].astype(np.float32)
    out, _ = _run([{"name": "flip"}], x)
    same = np.all(out == x, axis=(1, 2, 3))
    mirrored = np.all(out == x[:, :, ::-1], axis=(1, 2, 3))
    assert np.all(same | mirrored) and same.any() and mirrored.any()


def test_pad_crop_is_a_window_of_the_reflect_padded_image(real_images):
    x = real_images[0][:10].astype(np.float32)
    out, _ = _run([{"name": "pad_crop", "padding": 4}], x)
    padded = np.pad(x, ((0, 0), (4, 4), (4, 4), (0, 0)), mode="reflect")
    for i in range(len(x)):
        assert any(
            np.array_equal(out[i], padded[i, dy : dy + 32, dx : dx + 32])
            for dy in range(9)
            for dx in range(9)
        )


@pytest.mark.parametrize("name", ["translate", "rotate", "zoom"])
def test_geometric_steps_move_pixels_but_keep_range(real_images, name):
    x = real_images[0][:16].astype(np.float32)
    out, _ = _run([{"name": name}], x)
    assert out.shape == x.shape
    assert out.min() >= -1e-3 and out.max() <= 255.0 + 1e-3
    assert np.abs(out - x).mean() > 1.0


def test_make_dataset_batches_one_hot_and_sparse(real_images):
    x, y = real_images
    ds = make_dataset(
        x, y, num_classes=10, batch_size=64, policy=[{"name": "flip"}, {"name": "mixup"}], seed=1
    )
    batches = _batches(ds)
    assert [len(b[0]) for b in batches] == [64, 64, 64, 8]
    assert batches[0][0].dtype == np.float32 and batches[0][1].shape == (64, 10)
    np.testing.assert_allclose(np.concatenate([b[1] for b in batches]).sum(1), 1.0, atol=1e-6)
    sparse_ds = make_dataset(x, y, num_classes=10, batch_size=50, shuffle=False, sparse=True)
    xb, yb = _batches(sparse_ds)[0]
    np.testing.assert_array_equal(yb, y[:50])
    np.testing.assert_array_equal(xb, x[:50].astype(np.float32))
    with pytest.raises(ZoobenchError, match="sparse labels cannot carry mixup"):
        make_dataset(x, y, num_classes=10, policy=[{"name": "mixup"}], sparse=True)


def test_policy_validation_and_defaults():
    assert validate_policy([{"name": "cutout"}]) == [
        {"name": "cutout", **available_steps()["cutout"]}
    ]
    with pytest.raises(ZoobenchError, match="unknown augment step 'autoaugment'"):
        validate_policy([{"name": "autoaugment"}])
    with pytest.raises(ZoobenchError, match="augment step 'cutout' has no parameter side"):
        validate_policy([{"name": "cutout", "side": 4}])


def test_fgsm_examples_step_by_epsilon_and_raise_the_loss(real_images):
    import keras

    from benchmark.train.adversarial import FGSMTrainer, fgsm_examples
    from zoo.layers import classifier_head, raw_image_input

    keras.utils.set_random_seed(0)
    inputs, h = raw_image_input((32, 32, 3))
    h = keras.layers.Conv2D(8, 3, activation="relu")(h)
    model = keras.Model(inputs, classifier_head(h, 10))
    x, y = real_images
    x = x[:64].astype(np.float32)
    y1 = keras.ops.one_hot(y[:64], 10)
    loss = keras.losses.CategoricalCrossentropy()
    adv = keras.ops.convert_to_numpy(fgsm_examples(model, loss, x, y1, epsilon=4.0))
    step = np.abs(adv - x)
    interior = (x >= 4) & (x <= 251)
    np.testing.assert_allclose(step[interior & (step > 0)], 4.0, atol=1e-4)
    assert adv.min() >= 0 and adv.max() <= 255
    assert float(loss(y1, model(adv))) > float(loss(y1, model(x)))

    trainer = FGSMTrainer(model, epsilon=2.0, ratio=0.5)
    trainer.compile(
        optimizer=keras.optimizers.Adam(1e-2), loss="categorical_crossentropy", metrics=["accuracy"]
    )
    before = float(loss(y1, model(x)))
    history = trainer.fit(x, y1, epochs=5, batch_size=32, verbose=0)
    assert set(history.history) >= {"loss", "accuracy"}
    assert float(loss(y1, model(x))) < before
    with pytest.raises(ValueError, match="ratio must be in"):
        FGSMTrainer(model, ratio=1.5)


@pytest.mark.parametrize("name", sorted(available_steps()))
def test_every_step_keeps_shape_dtype_range_and_label_sums(real_images, name):
    x, y = real_images
    x = x[:24].astype(np.float32)
    out, labels = _run([{"name": name}], x, y[:24])
    assert out.shape == x.shape and out.dtype == np.float32
    assert out.min() >= -1e-3 and out.max() <= 255.0 + 1e-3
    np.testing.assert_allclose(labels.sum(1), 1.0, atol=1e-6)
    if name not in ("mixup", "cutmix"):
        np.testing.assert_array_equal(labels.argmax(1), y[:24])


def test_a_policy_is_seeded_same_seed_same_draws_other_seed_other_draws(real_images):
    x = real_images[0][:32].astype(np.float32)
    policy = [{"name": "flip"}, {"name": "pad_crop"}, {"name": "cutout"}, {"name": "mixup"}]
    first, again = _run(policy, x, seed=3), _run(policy, x, seed=3)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[0], _run(policy, x, seed=4)[0])


def test_array_batches_reshuffle_each_epoch_from_the_seed(real_images):
    from benchmark.data.augment import _array_batches_class

    x, y = real_images

    def epochs(seed):
        ds = _array_batches_class()(
            x,
            y,
            num_classes=10,
            batch_size=64,
            apply=None,
            shuffle=True,
            seed=seed,
            sparse=True,
            drop_remainder=False,
        )
        out = []
        for _ in range(2):
            out.append(
                np.concatenate([keras.ops.convert_to_numpy(ds[i][1]) for i in range(len(ds))])
            )
            ds.on_epoch_end()
        return out, len(ds)

    (a1, a2), count = epochs(0)
    (b1, b2), _ = epochs(0)
    assert count == 4  # 200 images in batches of 64, the last one short
    np.testing.assert_array_equal(a1, b1)
    np.testing.assert_array_equal(a2, b2)
    assert not np.array_equal(a1, a2)  # a new order each epoch
    assert sorted(a1.tolist()) == sorted(y.tolist())  # every image once per epoch


# ---- learned policies: RandAugment, AugMix (Keras's layers), TrivialAugment (built here) ----------

LEARNED = {
    "randaugment": {"name": "randaugment"},
    "augmix": {"name": "augmix", "variants": 2},
    "trivialaugment": {"name": "trivialaugment"},
}


@pytest.mark.parametrize("name", sorted(LEARNED))
def test_learned_policy_is_seeded_changes_images_and_keeps_labels(real_images, name):
    x, y = real_images
    x, y = x[:16].astype(np.float32), y[:16]
    policy = [LEARNED[name]]
    first, again = _run(policy, x, y, seed=7), _run(policy, x, y, seed=7)
    assert first[0].shape == x.shape and first[0].dtype == np.float32
    np.testing.assert_array_equal(first[0], again[0])  # same seed, same images
    np.testing.assert_array_equal(first[1], np.eye(10, dtype=np.float32)[y])  # labels untouched
    assert np.abs(first[0] - x).mean() > 2.0  # the images really change
    assert not np.array_equal(first[0], _run(policy, x, y, seed=8)[0])


def test_trivialaugment_gives_each_image_its_own_op(real_images):
    x = real_images[0][:64].astype(np.float32)
    out, _ = _run([{"name": "trivialaugment"}], x, seed=1)
    unchanged = np.all(out == x, axis=(1, 2, 3))
    # One op of 14 per image: some images are left as they were (identity, and ops such as
    # posterize that may leave an image alone), most are not. A batch-wide choice gives all or none.
    assert 0 < unchanged.sum() < len(x) // 2


def test_learned_policies_run_in_the_dataset_pipeline(real_images):
    # On TensorFlow: traced into the tf.data map (one chain set for AugMix and one op for
    # RandAugment keep the trace short).
    x, y = real_images[0][:40], real_images[1][:40]
    policy = [
        LEARNED["trivialaugment"],
        {"name": "randaugment", "num_ops": 1},
        {"name": "augmix", "variants": 1},
    ]
    batches = _batches(make_dataset(x, y, num_classes=10, batch_size=32, policy=policy, seed=3))
    assert [b[0].shape for b in batches] == [(32, 32, 32, 3), (8, 32, 32, 3)]
    images = np.concatenate([b[0] for b in batches])
    labels = np.concatenate([b[1] for b in batches])
    assert images.dtype == np.float32 and images.min() >= 0 and images.max() <= 255
    np.testing.assert_array_equal(labels.sum(1), 1.0)  # one-hot still: no policy mixes labels
    assert sorted(labels.argmax(1).tolist()) == sorted(y.tolist())
    # Shuffled, so compare the pixel distributions: the policy has changed them.
    assert np.abs(np.sort(images, axis=None) - np.sort(x, axis=None)).mean() > 1.0


def test_augmix_repeats_from_the_seed_call_after_call(real_images):
    # Keras's AugMix picks its chains with Python's global random: without the step's seeding, two
    # builds with one seed would differ, and one trace would fix the chains for a whole run.
    x = real_images[0][:16].astype(np.float32)
    fn = build_policy([{"name": "augmix", "variants": 4}], seed=2)
    again = build_policy([{"name": "augmix", "variants": 4}], seed=2)
    tensor = keras.ops.convert_to_tensor(x)
    labels = keras.ops.one_hot(keras.ops.zeros(16, "int32"), 10)
    for _ in range(3):
        a = keras.ops.convert_to_numpy(fn(tensor, labels)[0])
        np.testing.assert_array_equal(a, keras.ops.convert_to_numpy(again(tensor, labels)[0]))


@pytest.mark.parametrize(
    "step, message",
    [
        ({"name": "randaugment", "magnitude": 9}, "augment step 'randaugment' has no parameter"),
        ({"name": "randaugment", "factor": 1.5}, "'randaugment': factor must be a number in"),
        ({"name": "randaugment", "num_ops": 0}, "'randaugment': num_ops must be a whole number"),
        ({"name": "augmix", "severity": 3}, "augment step 'augmix' has no parameter severity"),
        ({"name": "augmix", "alpha": 0}, "'augmix': alpha must be a number > 0"),
        ({"name": "trivialaugment", "num_bins": 31}, "'trivialaugment' has no parameter num_bins"),
    ],
)
def test_learned_policy_parameters_are_checked(step, message):
    with pytest.raises(ZoobenchError, match=message) as info:
        validate_policy([step])
    assert "\n" not in str(info.value)


def test_a_tuner_augment_choice_between_learned_policies_validates():
    from benchmark.config.profiles import parse_profile
    from benchmark.tune.tuning import declare_training_hps

    search = {
        "ra": [{"name": "randaugment", "num_ops": 3, "factor": 0.2}],
        "am": [{"name": "flip"}, {"name": "augmix"}],
        "ta": [{"name": "trivialaugment"}],
    }
    raw = {
        "name": "t",
        "members": [{"architecture": "seed_cnn", "tune": True}],
        "tuner": {"search": {"augment": search}},
    }
    profile = parse_profile(raw, "t.toml", check_architectures=False)
    assert profile.members[0].tune["search"]["augment"] == search
    import keras_tuner

    hp = keras_tuner.HyperParameters()
    _, policy = declare_training_hps(hp, {"augment": search}, {}, [])
    assert policy == search[hp.get("train_augment")]
    bad = {**search, "ra": [{"name": "randaugment", "factor": 2.0}]}
    with pytest.raises(ZoobenchError, match=r"search\.augment\.ra: augment step 'randaugment'"):
        parse_profile(
            {**raw, "tuner": {"search": {"augment": bad}}}, "t.toml", check_architectures=False
        )
