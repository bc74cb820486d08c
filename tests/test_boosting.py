"""Boosting (SAMME) over members: the weight arithmetic, the weights reaching Keras's loss, the rounds
of a run (stored, linked, resumed, skipped) and the boosting ensemble built from their alphas."""

from __future__ import annotations

import math
import warnings
from types import SimpleNamespace

import numpy as np
import pytest

from benchmark.config.profiles import parse_profile
from benchmark.errors import ZoobenchError
from benchmark.train import boosting

# ---- the arithmetic: a known answer, scikit-learn's AdaBoost, SAMME's invariants ------------------


def test_samme_update_matches_a_hand_computed_case():
    # 4 images, 3 classes. Round 0 misses image 0: err 1/4, alpha = log(3) + log(2) = log 6,
    # image 0's weight x6 then normalised: [6, 1, 1, 1] / 9.
    w, alpha, err = boosting.samme_update(np.full(4, 0.25), [True, False, False, False], 3)
    assert err == pytest.approx(0.25) and alpha == pytest.approx(math.log(6))
    np.testing.assert_allclose(w, [2 / 3, 1 / 9, 1 / 9, 1 / 9])
    # Round 1 misses image 1: err 1/9, alpha = log(8) + log(2) = log 16: [6, 16, 1, 1] / 24.
    w, alpha, err = boosting.samme_update(w, [False, True, False, False], 3)
    assert err == pytest.approx(1 / 9) and alpha == pytest.approx(math.log(16))
    np.testing.assert_allclose(w, [1 / 4, 2 / 3, 1 / 24, 1 / 24])
    # replay() from stored predicted labels gives the same weights, alphas and errors
    y = np.array([0, 1, 2, 0])
    state = boosting.replay([np.array([1, 1, 2, 0]), np.array([0, 2, 2, 0])], y, 3)
    np.testing.assert_allclose(state.weights, [1 / 4, 2 / 3, 1 / 24, 1 / 24])
    np.testing.assert_allclose(state.alphas, [math.log(6), math.log(16)])
    assert state.rounds == 2 and not state.stopped
    assert boosting.weights_hash(state.weights) == boosting.weights_hash(state.weights * 7)
    assert boosting.weights_hash(state.weights) != boosting.weights_hash(np.full(4, 0.25))


def test_the_weights_emphasise_the_misclassified_images():
    rng = np.random.default_rng(0)
    for _ in range(20):
        k = int(rng.integers(2, 11))
        w = rng.random(50) + 0.01
        wrong = rng.random(50) < 0.3
        new, alpha, err = boosting.samme_update(w, wrong, k)
        assert alpha > 0 and new.sum() == pytest.approx(1.0)
        ratio = new / (w / w.sum())
        np.testing.assert_allclose(ratio[wrong] / ratio[~wrong].mean(), math.exp(alpha))
        # SAMME's invariant: the round's own mistakes now weigh exactly chance, (K - 1) / K
        assert new[wrong].sum() == pytest.approx((k - 1) / k)
    w = boosting.as_sample_weight(np.array([1.0, 3.0]))
    assert w.dtype == np.float32 and w.mean() == pytest.approx(1.0)  # the learning rate's meaning


def test_samme_matches_scikit_learns_adaboost_on_a_fixed_sequence_of_learners():
    from sklearn.base import BaseEstimator, ClassifierMixin
    from sklearn.ensemble import AdaBoostClassifier

    y = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    script = [
        np.array([0, 1, 2, 0, 1, 1, 0, 1]),
        np.array([0, 0, 2, 1, 1, 2, 0, 1]),
        np.array([1, 1, 2, 0, 2, 2, 0, 0]),
    ]
    seen = []  # the sample weights scikit-learn gave each round

    class Scripted(ClassifierMixin, BaseEstimator):
        def fit(self, x, labels, sample_weight=None):
            self.round_ = len(seen)
            seen.append(np.asarray(sample_weight, dtype=float) / np.sum(sample_weight))
            self.classes_ = np.unique(labels)
            return self

        def predict(self, x):
            return script[self.round_][x[:, 0].astype(int)]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # `algorithm` is deprecated where it still exists
        kwargs = {"algorithm": "SAMME"} if "algorithm" in AdaBoostClassifier().get_params() else {}
        ada = AdaBoostClassifier(Scripted(), n_estimators=3, learning_rate=1.0, **kwargs)
        ada.fit(np.arange(len(y))[:, None], y)
    for k in range(3):
        np.testing.assert_allclose(boosting.replay(script[:k], y, 3).weights, seen[k])
    state = boosting.replay(script, y, 3)
    np.testing.assert_allclose(state.alphas, ada.estimator_weights_)
    np.testing.assert_allclose(state.errors, ada.estimator_errors_)


def test_a_round_no_better_than_chance_stops_the_boosting_and_a_perfect_one_too():
    w = np.full(3, 1 / 3)
    new, alpha, err = boosting.samme_update(w, [True, True, False], 3)  # err 2/3 = (K-1)/K
    assert err == pytest.approx(2 / 3) and alpha == 0.0 and np.array_equal(new, w)
    assert "no better than chance" in boosting.stop_reason(err, 3, 4)
    state = boosting.replay([np.array([1, 2, 2])], np.array([0, 1, 2]), 3)
    assert state.stopped.startswith("round 0's weighted training error 0.6667")
    assert state.alphas == [0.0]
    with pytest.raises(ValueError, match="follows a round that stopped"):
        boosting.replay([np.array([1, 2, 2]), np.array([0, 1, 2])], np.array([0, 1, 2]), 3)
    new, alpha, err = boosting.samme_update(w, [False, False, False], 3)  # perfect: err 0
    assert err == 0.0 and math.isfinite(alpha) and alpha > 10 and np.allclose(new, w)
    assert "nothing is left" in boosting.stop_reason(err, 3, 0)
    assert boosting.stop_reason(0.5, 3, 0) == ""
    for bad in ([np.ones(2), [True], 3], [np.zeros(2), [True, False], 3], [np.ones(2), [1, 0], 1]):
        with pytest.raises(ValueError):
            boosting.samme_update(*bad)


def test_steps_that_cannot_take_weights_resample_by_weight_instead():
    assert boosting.weighting(None, [{"name": "flip"}]) == boosting.SAMPLE_WEIGHT
    assert boosting.weighting(None, [{"name": "mixup", "alpha": 0.2}]) == boosting.RESAMPLING
    assert boosting.weighting("fine-tuning", []) == boosting.RESAMPLING
    assert np.array_equal(boosting.resample(np.full(5, 0.2), seed=1), np.arange(5))  # round 0
    w = np.where(np.arange(1000) < 100, 9.0, 1.0)  # the first 100 rows weigh half of the total
    rows = boosting.resample(w, seed=[0, 1])
    assert len(rows) == 1000 and np.array_equal(rows, boosting.resample(w, seed=[0, 1]))
    assert 0.45 < np.mean(rows < 100) < 0.55


def _round(mid, k, previous, alpha, stop="", train_hash="h"):
    return SimpleNamespace(
        id=mid,
        train_probs_sha256=f"{train_hash}-{mid}",
        config={"boosting": {"round": k, "previous": previous}},
        metrics={"boosting": {"alpha": alpha, "error": 0.5, "stop": stop}},
    )


def test_the_ensemble_chain_follows_the_links_and_leaves_out_stale_and_useless_rounds():
    r0 = _round("a", 0, [], 1.0)
    r1 = _round("b", 1, [["a", "h-a"]], 2.0)
    stale = _round("c", 1, [["a", "OLD"]], 5.0)  # trained after an older round 0's predictions
    r2 = _round("d", 2, [["a", "h-a"], ["b", "h-b"]], 0.0, stop="chance")
    assert boosting.chain([r0, stale, r1, r2]) == [r0, r1]
    stop = _round("e", 1, [["a", "h-a"]], 9.0, stop="perfect")
    after = _round("f", 2, [["a", "h-a"], ["e", "h-e"]], 1.0)
    assert boosting.chain([r0, stop, after]) == [r0, stop]  # nothing follows a stopping round
    assert boosting.chain([r1]) == []


# ---- the profile and the plan ---------------------------------------------------------------------


def _profile(member: dict, **extra) -> dict:
    return {
        "name": "boost-test",
        "seed": 0,
        "deterministic": True,
        "data": {"dataset": "cifar10", "train_size": 100, "val_size": 50, "test_size": 50},
        "training": {
            "epochs": 5,
            "batch_size": 25,
            "learning_rate": 0.01,
            "early_stopping_patience": 0,
        },
        "members": [
            {
                "architecture": "seed_cnn",
                "name": "cnn",
                "hp": {"width": 0.5, "dense_units": 0, "dropout": 0.0},
                **member,
            }
        ],
        "ensembles": {"methods": ["boosting", "average-all"]},
        "report": {"enabled": False},
        **extra,
    }


@pytest.mark.parametrize(
    ("other", "named"),
    [({"tune": True}, "tune"), ({"bagging": 2}, "bagging"), ({"seeds": 3}, "seeds")],
)
def test_boosting_with_tune_bagging_or_seeds_is_refused_in_one_line(other, named):
    with pytest.raises(ZoobenchError) as info:
        parse_profile(_profile({"boosting": 2, **other}), "p.toml", check_architectures=False)
    message = str(info.value)
    assert "\n" not in message
    assert f"members[0].boosting: cannot be combined with {named}" in message
    with pytest.raises(
        ZoobenchError, match=r"members\[0\]\.boosting: must be a whole number >= 0, got -1$"
    ):
        parse_profile(_profile({"boosting": -1}), "p.toml", check_architectures=False)


def test_the_plan_has_one_task_a_round_in_the_boosting_group():
    from benchmark.plan.tasks import Boost, describe, expand

    profile = parse_profile(_profile({"boosting": 3}), "p.toml", check_architectures=False)
    tasks = expand(profile, seed=0)
    assert [t.label for t in tasks] == ["cnn [boost 0]", "cnn [boost 1]", "cnn [boost 2]"]
    assert [t.boost for t in tasks] == [Boost(k, 3) for k in range(3)]
    assert {t.group for t in tasks} == {"boosting:cnn"}
    assert all("cnn [boost" in line for line in describe(tasks, None))


# ---- Keras: the weights reach the loss, and follow their images through the shuffle --------------


def test_sample_weights_follow_their_images_through_shuffle_and_policy():
    pytest.importorskip("tensorflow")
    from benchmark.data.augment import make_dataset

    n = 40
    x = np.repeat(np.arange(n, dtype=np.uint8)[:, None, None, None], 4, axis=1).repeat(4, 2)
    x = np.repeat(x, 3, axis=3)  # image i is all pixels i: its weight must be i / 10
    weights = np.arange(n, dtype=np.float32) / 10
    ds = make_dataset(
        x,
        np.arange(n) % 10,
        num_classes=10,
        batch_size=16,
        shuffle=True,
        seed=3,
        policy=[{"name": "flip"}],
        sample_weight=weights,
    )
    seen = []
    for images, labels, w in ds:
        np.testing.assert_allclose(np.asarray(w), np.asarray(images)[:, 0, 0, 0] / 10)
        assert labels.shape == (len(w), 10)
        seen += list(np.asarray(w))
    assert sorted(seen) == pytest.approx(list(weights)) and seen != list(weights)  # shuffled
    with pytest.raises(ZoobenchError, match="mixup / cutmix"):
        make_dataset(
            x, np.arange(n) % 10, num_classes=10, policy=[{"name": "mixup"}], sample_weight=weights
        )
    with pytest.raises(ZoobenchError, match="sample_weight must be 40"):
        make_dataset(x, np.arange(n) % 10, num_classes=10, sample_weight=weights[:5])


def test_sample_weight_reaches_the_loss():
    keras = pytest.importorskip("keras")
    from benchmark.train.training import fit, resolve_training

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(64, 8, 8, 3), dtype=np.uint8)
    y = rng.integers(0, 10, size=64)
    training = resolve_training({"epochs": 2, "batch_size": 16, "early_stopping_patience": 0})

    def trained(sample_weight):
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [
                keras.Input((8, 8, 3)),
                keras.layers.Rescaling(1 / 255),
                keras.layers.Flatten(),
                keras.layers.Dense(10, "softmax"),
            ]
        )
        result = fit(
            model,
            x,
            y,
            x[:16],
            y[:16],
            training,
            num_classes=10,
            seed=0,
            sample_weight=sample_weight,
        )
        return result.model.get_weights()[0], result.history["loss"].iloc[0]

    plain, plain_loss = trained(None)
    ones, ones_loss = trained(np.ones(64))
    skewed, skewed_loss = trained(boosting.as_sample_weight(np.where(y < 5, 1.0, 0.01)))
    np.testing.assert_allclose(ones, plain, atol=1e-5)  # uniform weights change nothing
    assert ones_loss == pytest.approx(plain_loss, rel=1e-5)
    assert np.abs(skewed - plain).max() > 1e-3 and skewed_loss != pytest.approx(plain_loss)


# ---- a run: rounds stored and linked, the ensemble, resume, skipped rounds -----------------------


@pytest.fixture(scope="module")
def boosted_run(tmp_path_factory, tiny_jpg):
    pytest.importorskip("keras")
    from benchmark.run.runner import Runner

    out = tmp_path_factory.mktemp("runs") / "boost"
    profile = parse_profile(_profile({"boosting": 2}), "boost-test")
    lines: list[str] = []
    runner = Runner(profile, out, data_dir=str(tiny_jpg), progress=lines.append)
    runner.run()
    return runner, profile, lines


def _rounds(store):
    return sorted(
        (m for m in store.members() if m.config.get("boosting")),
        key=lambda m: m.config["boosting"]["round"],
    )


def test_a_boosting_run_stores_linked_rounds_and_a_samme_ensemble(boosted_run):
    runner, _, lines = boosted_run
    store, d = runner.store, runner.data
    r0, r1 = _rounds(store)
    assert [r0.name, r1.name] == ["cnn [boost 0]", "cnn [boost 1]"] and r0.ok and r1.ok
    assert {r0.config["group"], r1.config["group"]} == {"boosting:cnn"}
    assert (
        r0.config["boosting"]["previous"] == []
        and r0.config["boosting"]["weighting"] == "sample_weight"
    )
    assert r1.config["boosting"]["previous"] == [[r0.id, r0.train_probs_sha256]]
    # round 1's weights: SAMME over round 0's stored training predictions (train split only)
    train0 = r0.probs("train")
    assert train0.shape == (len(d.y_train), 10) and not r0.verify()
    state = boosting.replay([train0.argmax(axis=1)], d.y_train, 10)
    assert r1.config["boosting"]["weights_sha256"] == boosting.weights_hash(state.weights)
    assert r0.config["boosting"]["weights_sha256"] == boosting.weights_hash(np.ones(len(d.y_train)))
    assert r0.metrics["boosting"]["alpha"] == pytest.approx(state.alphas[0])
    assert r0.metrics["boosting"]["error"] == pytest.approx(state.errors[0]) and not state.stopped
    # the group's ensemble: the rounds' probabilities weighted by alpha / sum(alpha)
    ens = store.ensemble("boosting-cnn")
    alphas = [r0.metrics["boosting"]["alpha"], r1.metrics["boosting"]["alpha"]]
    assert ens.config["method"] == "boosting" and ens.config["members"] == [r0.id, r1.id]
    assert ens.config["params"]["alphas"] == pytest.approx(alphas)
    params = ens.config["params"]
    assert params["group"] == "boosting:cnn" and 0 <= params["vote_val_accuracy"] <= 1
    weights = np.array(alphas) / sum(alphas)
    assert ens.config["weights"] == pytest.approx(list(weights))
    ens_raw, r0_raw, r1_raw = (e.probs("test", calibrated=False) for e in (ens, r0, r1))
    np.testing.assert_allclose(ens_raw, weights[0] * r0_raw + weights[1] * r1_raw, atol=1e-5)
    board = store.saved_leaderboard()  # a leaderboard row like the other ensembles
    assert "boosting-cnn" in set(board["model"])


def test_the_boosting_ensemble_exports_as_one_model_with_its_weights(boosted_run):
    from ensembles.export import build_fused_model

    store = boosted_run[0].store
    ens = store.ensemble("boosting-cnn")
    fused = build_fused_model(store, ens)
    probs = fused.predict(store.load_array("x_test").astype(np.float32), verbose=0)
    np.testing.assert_allclose(probs, ens.probs("test"), atol=1e-4)


def test_a_resumed_run_retrains_a_lost_round_with_the_same_weights(boosted_run, tiny_jpg):
    from benchmark.run.runner import Runner

    runner, profile, _ = boosted_run
    r0, r1 = _rounds(runner.store)
    before = dict(r1.config["boosting"])
    r1.path.joinpath("metrics.json").unlink()  # killed while round 1 was being written
    again = Runner(profile, runner.store.root, data_dir=str(tiny_jpg), progress=lambda line: None)
    again.run()
    kept = [o.name for o in again.outcomes if o.kept]
    redone = [o for o in again.outcomes if not o.kept]
    assert kept == ["cnn [boost 0]"] and [o.name for o in redone] == ["cnn [boost 1]"]
    assert redone[0].id == r1.id and redone[0].status == "done"
    assert runner.store.member(r1.id).config["boosting"] == before  # same weights, same hash


def test_a_round_after_a_missing_or_failed_one_is_skipped_with_the_reason(boosted_run, tmp_path):
    from benchmark.plan import budget
    from benchmark.plan.tasks import expand
    from benchmark.run.members import MemberTrainer
    from benchmark.store.runstore import RunStore

    runner, profile, _ = boosted_run
    first, second = expand(profile, seed=0)

    def trainer(store):
        return MemberTrainer(
            store, runner.data, seed=0, clock=budget.Clock(None), progress=lambda line: None
        )

    missing = trainer(RunStore(tmp_path / "a"))
    missing.run(second)  # round 0 never ran (dropped by the budget)
    (out,) = missing.outcomes
    assert out.status == "skipped" and "round 0 did not run" in out.reason
    failing = trainer(RunStore(tmp_path / "b"))

    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")

    failing.train = broken
    failing.run(first)
    failing.run(second)
    assert [o.status for o in failing.outcomes] == ["failed", "skipped"]
    assert failing.outcomes[1].reason == "not trained: round 0 failed"
    assert len(RunStore(tmp_path / "b").members()) == 1  # a skipped round stores nothing
