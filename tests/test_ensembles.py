"""Ensemble methods on probability matrices with known answers, and build_ensembles on a fake store."""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest
from fake_run import make_fake_run

from benchmark import atomic
from benchmark.config.schema import ENSEMBLE_METHODS
from benchmark.errors import ZoobenchError
from ensembles.build import DEFAULTS, build_ensembles, resolve_config
from ensembles.methods import (
    AverageEnsemble,
    GreedyEnsemble,
    StackingEnsemble,
    WeightedAverage,
    accuracy,
    disagreement_matrix,
)


def one_hotish(pred: np.ndarray, num_classes: int, conf: float) -> np.ndarray:
    """Rows with ``conf`` on ``pred`` and the rest spread evenly."""
    p = np.full((len(pred), num_classes), (1 - conf) / (num_classes - 1))
    p[np.arange(len(pred)), pred] = conf
    return p


# ---- averaging -----------------------------------------------------------------------------------
def test_top_k_picks_the_best_members_by_validation_accuracy():
    y = np.arange(100) % 4
    wrong = (y + 1) % 4
    accs = [0.5, 0.9, 0.7, 0.8]
    mats = [one_hotish(np.where(np.arange(100) < a * 100, y, wrong), 4, 0.7) for a in accs]
    est = AverageEnsemble(top_k=2).fit(mats, y)
    assert est.selected_ == [1, 3]
    np.testing.assert_allclose(est.weights_, [0, 0.5, 0, 0.5])
    np.testing.assert_allclose(est.predict_proba(mats), (mats[1] + mats[3]) / 2)
    everyone = AverageEnsemble().fit(mats, y)
    np.testing.assert_allclose(everyone.weights_, [0.25] * 4)
    assert AverageEnsemble(top_k=10).fit(mats, y).selected_ == [0, 1, 2, 3]  # k capped at M


def redundant_and_complementary():
    """A (acc .8), B = a duplicate of A, C (acc .4) right exactly where A is wrong, confidently."""
    n, c = 100, 3
    y = np.arange(n) % c
    rows = np.arange(n)
    a = one_hotish(np.where(rows < 80, y, (y + 1) % c), c, 0.6)
    cmat = np.full((n, c), 0.3)
    cmat[rows, (y + 2) % c] = 0.4  # hesitant and wrong on rows 0..59
    right = rows >= 60
    cmat[right] = 0.05
    cmat[rows[right], y[right]] = 0.9
    return [a, a.copy(), cmat], y


def test_greedy_prefers_a_complementary_member_over_a_redundant_better_one():
    mats, y = redundant_and_complementary()
    assert accuracy(mats[1], y) > accuracy(mats[2], y)  # B is the better single model
    est = GreedyEnsemble(size=10).fit(mats, y)
    assert est.weights_[1] == 0.0
    assert est.weights_[2] > 0.0
    assert accuracy(est.predict_proba(mats), y) == 1.0
    top2 = AverageEnsemble(top_k=2).fit(mats, y)
    assert accuracy(top2.predict_proba(mats), y) == pytest.approx(0.8)
    assert est.weights_.sum() == pytest.approx(1.0)
    # without use_best the weights are the counts over all `size` picks
    full = GreedyEnsemble(size=10, use_best=False).fit(mats, y)
    assert len(full.picks_) == 10
    np.testing.assert_allclose(full.weights_, np.bincount(full.picks_, minlength=3) / 10)


def test_greedy_init_size_starts_from_the_best_members():
    mats, y = redundant_and_complementary()
    est = GreedyEnsemble(size=3, init_size=2, use_best=False).fit(mats, y)
    assert est.picks_[:2] == [0, 1]  # the two 0.8 members first, in order
    assert est.picks_[2] == 2


# ---- stacking ------------------------------------------------------------------------------------
def anti_informative(n: int = 300, c: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % c
    good = one_hotish(np.where(rng.random(n) < 0.6, y, (y + 1) % c), c, 0.5)
    liar = one_hotish((y + 1) % c, c, 0.8)  # always confidently names the next class
    return [good, liar], y


def test_stacking_beats_averaging_when_a_member_is_anti_informative():
    mats, y = anti_informative()
    avg = AverageEnsemble().fit(mats, y)
    stack = StackingEnsemble(seed=0).fit(mats, y)
    assert accuracy(avg.predict_proba(mats), y) < 0.7
    assert accuracy(stack.oof_probs_, y) > 0.95  # honest out-of-fold score
    assert stack.cv_folds_ == 5
    fresh, _ = anti_informative(seed=1)
    assert accuracy(stack.predict_proba(fresh), y) > 0.95


def test_stacking_matches_sklearn_predict_proba_and_roundtrips_through_arrays():
    from sklearn.linear_model import LogisticRegression

    mats, y = anti_informative(c=4)
    stack = StackingEnsemble(C=0.5).fit(mats, y)
    x = np.concatenate(mats, axis=1)
    ref = LogisticRegression(C=0.5, max_iter=1000).fit(x, y)
    np.testing.assert_allclose(stack.predict_proba(mats), ref.predict_proba(x), atol=1e-6)
    logits = x @ stack.coef_.T + stack.intercept_  # one Dense(softmax) layer
    soft = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(soft / soft.sum(1, keepdims=True), ref.predict_proba(x), atol=1e-6)
    back = StackingEnsemble.from_arrays(stack.settings(), stack.arrays())
    np.testing.assert_allclose(back.predict_proba(mats), stack.predict_proba(mats))


def test_stacking_binary_and_missing_classes_give_full_width_probabilities():
    from sklearn.linear_model import LogisticRegression

    mats, y = anti_informative(n=120, c=2)
    padded = [np.hstack([m, np.zeros((len(m), 2))]) for m in mats]  # classes 2, 3 never occur
    stack = StackingEnsemble().fit(padded, y)
    out = stack.predict_proba(padded)
    assert out.shape == (120, 4)
    np.testing.assert_allclose(out[:, 2:], 0.0, atol=1e-12)
    ref = LogisticRegression(max_iter=1000).fit(np.concatenate(padded, 1), y)
    np.testing.assert_allclose(out[:, :2], ref.predict_proba(np.concatenate(padded, 1)), atol=1e-6)


def test_mlp_stacker_forward_pass_matches_sklearn():
    mats, y = anti_informative(n=150)
    stack = StackingEnsemble(stacker="mlp", hidden_units=8, max_iter=300, cv=3).fit(mats, y)
    from sklearn.neural_network import MLPClassifier

    ref = MLPClassifier(hidden_layer_sizes=(8,), alpha=1e-3, max_iter=300, random_state=0)
    x = np.concatenate(mats, axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning, as inside the stacker
        ref.fit(x, y)
    np.testing.assert_allclose(stack.predict_proba(mats), ref.predict_proba(x), atol=1e-6)
    back = StackingEnsemble.from_arrays(stack.settings(), stack.arrays())
    np.testing.assert_allclose(back.predict_proba(mats), stack.predict_proba(mats))


# ---- validation ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "est, message",
    [
        (AverageEnsemble(top_k=0), "top_k must be a positive integer, got 0"),
        (AverageEnsemble(top_k=2.5), "top_k must be a positive integer, got 2.5"),
        (GreedyEnsemble(size=-1), "size must be a positive integer, got -1"),
        (GreedyEnsemble(init_size=-2), "init_size must be a non-negative integer, got -2"),
        (StackingEnsemble(stacker="svm"), "stacker must be one of logistic, mlp, got 'svm'"),
        (StackingEnsemble(C=0), "C must be a positive number, got 0"),
        (StackingEnsemble(cv=1), "cv must be at least 2 folds, got 1"),
    ],
)
def test_parameters_are_validated_with_their_name_and_value(est, message):
    mats, y = anti_informative(n=30)
    with pytest.raises(ValueError) as err:
        est.fit(mats, y)
    assert message in str(err.value)


def test_inputs_are_validated():
    mats, y = anti_informative(n=30)
    with pytest.raises(ValueError, match=r"probs_list\[1\] has shape \(29, 3\)"):
        AverageEnsemble().fit([mats[0], mats[1][:29]], y)
    with pytest.raises(ValueError, match="y must be a 1-D array of 30 labels"):
        AverageEnsemble().fit(mats, y[:5])
    with pytest.raises(ValueError, match=r"y must lie in \[0, 3\)"):
        AverageEnsemble().fit(mats, y + 1)
    with pytest.raises(ValueError, match="NaN"):
        AverageEnsemble().fit([mats[0] * np.nan], y)
    with pytest.raises(RuntimeError, match="not fitted"):
        GreedyEnsemble().predict_proba(mats)
    fitted = AverageEnsemble().fit(mats, y)
    with pytest.raises(ValueError, match="has 1 members but the ensemble was fit on 2"):
        fitted.predict_proba(mats[:1])
    with pytest.raises(ValueError, match="weights must be non-negative and sum to 1"):
        WeightedAverage.from_weights([0.5, 0.2], 3)


def test_disagreement_matrix():
    a = one_hotish(np.array([0, 1, 2, 0]), 3, 0.9)
    b = one_hotish(np.array([0, 1, 1, 1]), 3, 0.9)
    d = disagreement_matrix([a, b, a])
    np.testing.assert_allclose(d, [[0, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0]])


# ---- build_ensembles on a fake store -------------------------------------------------------------
def test_build_ensembles_writes_every_method_and_skips_failed_members(tmp_path):
    store = make_fake_run(tmp_path / "run")
    entries = build_ensembles(store, {}, seed=0)
    names = [e.name for e in entries]
    assert names == ["average-all", "top-3", "greedy", "stacking-logistic"]
    y_val = store.labels("val")
    members = {m.id: m for m in store.members() if m.ok}
    for e in entries:
        folder = store.ensemble_dir(e.name)
        for f in ("config.json", "metrics.json", "val_probs.npy", "test_probs.npy"):
            assert (folder / f).is_file(), f
        assert "member99" not in e.config["members"]  # the failed member
        m = e.metrics
        assert m["status"] == "done"
        assert m["val_accuracy"] == pytest.approx(accuracy(e.probs("val"), y_val))
        used = [members[i] for i in e.config["members"]]
        extra = (
            0
            if e.config["method"] != "stacking"
            else int(np.load(folder / "stacker.npz")["coef_"].size + 10)
        )
        assert m["params"] == sum(u.metrics["params"] for u in used) + extra
        assert m["flops"] == sum(u.metrics["flops"] for u in used)
        per_image = sum(1 / u.metrics["inference_images_per_second"] for u in used)
        assert m["inference_images_per_second"] == pytest.approx(1 / per_image)
        assert e.probs("test").shape == (400, 10)
    top3 = store.ensemble("top-3").config
    assert top3["members"] == ["member00", "member01", "member02"]  # best three by val accuracy
    assert top3["weights"] == pytest.approx([1 / 3] * 3)
    stack = store.ensemble("stacking-logistic").config
    assert stack["weights"] is None and stack["stacker"]["file"] == "stacker.npz"
    assert not list(store.ensembles_dir.rglob("*.pkl"))
    div = atomic.read_json(store.ensembles_dir / "diversity.json")
    assert div["members"] == ["member00", "member01", "member02", "member03"]
    assert div["names"] == ["net0", "net1", "net2", "net3"]
    d = np.array(div["disagreement"])
    assert d.shape == (4, 4) and np.allclose(d, d.T) and np.all(np.diag(d) == 0) and d[0, 1] > 0
    best = atomic.read_json(store.ensemble_dir("best") / "config.json")
    every = [*members.values(), *entries]
    top = max(every, key=lambda e: (e.metrics["val_accuracy"], -e.metrics["val_loss"]))
    assert best["id"] == top.id
    assert best["model"] is None and "without model.keras" in best["reason"]
    # best/ is a pointer, not a leaderboard row
    assert "best" not in [e.name for e in store.ensembles()]


def test_rerun_recomputes_cleanly_and_drops_stale_methods(tmp_path):
    store = make_fake_run(tmp_path / "run")
    build_ensembles(store, {}, seed=0)
    first = (store.ensemble_dir("greedy") / "val_probs.npy").read_bytes()
    entries = build_ensembles(store, {"methods": ["greedy"], "greedy_size": 20}, seed=0)
    assert [e.name for e in entries] == ["greedy"]
    assert sorted(p.name for p in store.ensembles_dir.iterdir()) == [
        "best",
        "diversity.json",
        "greedy",
    ]
    assert (store.ensemble_dir("greedy") / "val_probs.npy").read_bytes() == first
    assert not list(store.ensembles_dir.rglob(".*.tmp"))


def test_bagging_and_seed_groups_are_averaged_per_group(tmp_path):
    store = make_fake_run(tmp_path / "run", accuracies=(0.8, 0.7, 0.75, 0.6, 0.65))
    groups = ["seeds:net", "seeds:net", "bagging:cnn", "bagging:cnn", "bagging:solo"]
    for i, group in enumerate(groups):  # rewritten through the store: the hashes stay true
        member = store.member(f"member{i:02d}")
        store.write_entry(
            member.path, config={**member.config, "group": group}, metrics=member.metrics
        )
    entries = build_ensembles(store, {"methods": ["bagging", "seeds"]}, seed=0)
    by_name = {e.name: e for e in entries}
    assert sorted(by_name) == ["bagging-cnn", "seeds-net"]  # a one-member group is no ensemble
    assert by_name["seeds-net"].config["members"] == ["member00", "member01"]
    assert by_name["bagging-cnn"].config["params"] == {"group": "bagging:cnn"}
    m2, m3 = store.member("member02"), store.member("member03")
    raw = [m.probs("test", calibrated=False) for m in (by_name["bagging-cnn"], m2, m3)]
    np.testing.assert_allclose(raw[0], (raw[1] + raw[2]) / 2, atol=1e-6)  # before calibration


def _grouped_fake_run(root):
    """A fake run whose eight members make every ensemble kind: two seed runs, two bagging
    replicas, two linked SAMME boosting rounds and two plain members."""
    store = make_fake_run(root, accuracies=(0.8, 0.75, 0.7, 0.72, 0.6, 0.55, 0.65, 0.5), seed=3)
    extra = {
        0: ({"group": "seeds:net"}, {}),
        1: ({"group": "seeds:net"}, {}),
        2: ({"group": "bagging:cnn"}, {}),
        3: ({"group": "bagging:cnn"}, {}),
        4: (
            {"group": "boosting:b", "boosting": {"round": 0, "previous": []}},
            {"boosting": {"alpha": 1.2, "error": 0.3, "stop": ""}},
        ),
        5: (
            {"group": "boosting:b", "boosting": {"round": 1, "previous": [["member04", ""]]}},
            {"boosting": {"alpha": 0.7, "error": 0.4, "stop": ""}},
        ),
    }
    for i, (config, metrics) in extra.items():  # rewritten through the store: hashes stay true
        member = store.member(f"member{i:02d}")
        store.write_entry(
            member.path, config={**member.config, **config}, metrics={**member.metrics, **metrics}
        )
    return store


def test_selection_never_depends_on_test_labels(tmp_path):
    """Permuting y_test changes no selection, weight, validation number or best choice, for every
    ensemble kind and group: average, top-k, greedy, stacking, bagging, seeds and boosting."""
    a = _grouped_fake_run(tmp_path / "a")
    b = _grouped_fake_run(tmp_path / "b")
    y_test = b.labels("test")
    b.save_array("y_test", np.random.default_rng(1).permutation(y_test))
    ea, eb = build_ensembles(a, {}, seed=0), build_ensembles(b, {}, seed=0)
    names = ["average-all", "top-3", "greedy", "stacking-logistic", "bagging-cnn", "seeds-net"]
    assert [e.name for e in ea] == [*names, "boosting-b"]  # one of every kind and group
    assert len({e.config["method"] for e in ea}) == len(ENSEMBLE_METHODS)
    assert [e.name for e in ea] == [e.name for e in eb]
    for x, y in zip(ea, eb, strict=True):
        assert x.config == y.config
        np.testing.assert_array_equal(x.probs("val"), y.probs("val"))
        np.testing.assert_array_equal(x.probs("test"), y.probs("test"))
        drop = ("finished_at", "fit_seconds")
        assert {k: v for k, v in x.metrics.items() if k not in drop} == {
            k: v for k, v in y.metrics.items() if k not in drop
        }
    best_a = atomic.read_json(a.ensemble_dir("best") / "config.json")
    best_b = atomic.read_json(b.ensemble_dir("best") / "config.json")
    best_a.pop("exported_at"), best_b.pop("exported_at")
    assert best_a == best_b
    assert json.dumps(atomic.read_json(a.ensembles_dir / "diversity.json")) == json.dumps(
        atomic.read_json(b.ensembles_dir / "diversity.json")
    )
    # ...while the reported test score does change
    greedy = next(e for e in ea if e.config["method"] == "greedy").probs("test")
    assert accuracy(greedy, a.labels("test")) != accuracy(greedy, b.labels("test"))


def test_config_is_validated_and_defaults_documented(tmp_path):
    assert resolve_config({}) == DEFAULTS
    with pytest.raises(ZoobenchError, match="unknown key"):
        resolve_config({"topk": 3})
    with pytest.raises(ZoobenchError, match=r"ensembles\.methods: must be .*'blend'\]$"):
        resolve_config({"methods": ["greedy", "blend"]})
    with pytest.raises(
        ZoobenchError, match=r"ensembles\.top_k: must be a whole number >= 1, got 0$"
    ):
        resolve_config({"top_k": 0})
    with pytest.raises(ZoobenchError, match="stacker: must be one of logistic, mlp, got 'svm'"):
        resolve_config({"stacker": "svm"})
    from pathlib import Path

    contracts = (Path(__file__).resolve().parents[1] / "docs" / "CONTRACTS.md").read_text()
    for key in DEFAULTS:
        assert f"`{key}`" in contracts, key


def test_too_few_members_gives_no_ensembles_but_a_best_member(tmp_path):
    store = make_fake_run(tmp_path / "run", accuracies=(0.8,))
    assert build_ensembles(store, {}, seed=0) == []
    best = atomic.read_json(store.ensemble_dir("best") / "config.json")
    assert best["kind"] == "member" and best["id"] == "member00"
    shutil.rmtree(store.members_dir)
    assert build_ensembles(store, {}, seed=0) == []
    assert not store.ensemble_dir("best").exists()


def test_stacking_refuses_a_class_with_one_validation_row():
    """No honest out-of-fold score exists then: stacking must not borrow another model's score."""
    rng = np.random.default_rng(0)
    y = np.array([0, 0, 0, 1, 1, 1, 2])  # class 2 has a single row
    probs = [rng.dirichlet(np.ones(3), size=len(y)) for _ in range(2)]
    with pytest.raises(ValueError, match="smallest class has 1"):
        StackingEnsemble(cv=3).fit(probs, y)


# ---- out-of-fold validation scores (ensembles.crossfit) ------------------------------------------
def overfit_run(tmp_path):
    """25 members barely above chance on 60 validation rows of 3 classes: greedy selection can
    fit the noise of those rows, and does."""
    accuracies = (0.4,) * 25
    return make_fake_run(
        tmp_path / "overfit", accuracies, n_val=60, num_classes=3, seed=0, failed=False
    )


def test_greedy_out_of_fold_validation_falls_below_its_in_sample_score_when_it_overfits(tmp_path):
    from benchmark.metrics import log_loss

    store = overfit_run(tmp_path)
    y_val = store.labels("val")
    built = {e.name: e for e in build_ensembles(store, {"methods": ["greedy"]}, seed=0)}
    greedy = built["greedy"].metrics
    members = [m for m in store.members() if m.ok]
    config = built["greedy"].config
    weights = dict(zip(config["members"], config["weights"], strict=True))
    in_sample = sum(w * store.member(mid).probs("val", False) for mid, w in weights.items())
    assert greedy["val_accuracy_in_sample"] == pytest.approx(accuracy(in_sample, y_val))
    # the in-sample figure is the optimism the stored score must not carry
    assert greedy["val_accuracy_in_sample"] >= greedy["val_accuracy"] + 0.15
    assert greedy["val_scoring"] == "out-of-fold" and greedy["cv_folds"] == 5
    oof = built["greedy"].probs("val", calibrated=False)
    assert greedy["val_accuracy"] == pytest.approx(accuracy(oof, y_val))
    assert greedy["val_loss"] == pytest.approx(log_loss(oof, y_val))
    assert not np.allclose(oof, in_sample, atol=1e-3)
    # the ranking sees only the out-of-fold figure: greedy's in-sample score beat every member,
    # its honest one does not, so the best is not greedy
    assert greedy["val_accuracy_in_sample"] > max(m.metrics["val_accuracy"] for m in members)
    assert store.best_pointer()["id"] != "greedy"


def test_final_greedy_weights_are_the_ones_fit_on_all_of_validation(tmp_path):
    store = overfit_run(tmp_path)
    y_val = store.labels("val")
    members = [m for m in store.members() if m.ok]
    val = [m.probs("val", calibrated=False) for m in members]
    test = [m.probs("test", calibrated=False) for m in members]
    entry = build_ensembles(store, {"methods": ["greedy"], "greedy_size": 12}, seed=0)[0]
    full = GreedyEnsemble(size=12).fit(val, y_val).weights_
    keep = np.flatnonzero(full)
    assert entry.config["members"] == [members[i].id for i in keep]
    assert entry.config["weights"] == pytest.approx(full[keep].tolist())
    np.testing.assert_allclose(
        entry.probs("test", calibrated=False), np.tensordot(full, np.stack(test), 1), atol=1e-6
    )


def test_each_fold_is_predicted_by_the_ensemble_fit_on_the_other_folds(tmp_path):
    from ensembles.crossfit import validation_folds

    store = make_fake_run(tmp_path / "run", seed=2)
    y_val = store.labels("val")
    members = [m for m in store.members() if m.ok]
    val = [m.probs("val", calibrated=False) for m in members]
    built = {e.name: e for e in build_ensembles(store, {"cv_folds": 4}, seed=7)}
    folds = validation_folds(y_val, 4, seed=7)
    assert len(folds) == 4
    for name, make in (("top-3", lambda: AverageEnsemble(top_k=3)), ("greedy", GreedyEnsemble)):
        expected = np.zeros_like(val[0])
        for train, test in folds:
            est = make().fit([v[train] for v in val], y_val[train])
            expected[test] = est.predict_proba([v[test] for v in val])
        np.testing.assert_allclose(
            built[name].probs("val", calibrated=False), expected, atol=1e-6, err_msg=name
        )
    # averaging fits nothing: its validation score stays the plain average's
    average = built["average-all"]
    assert average.metrics["val_scoring"] == "nothing fit on validation"
    np.testing.assert_allclose(average.probs("val", calibrated=False), np.mean(val, 0), atol=1e-6)
    # stacking's out-of-fold rows come from the same helper: the stacker on the other folds
    stack = built["stacking-logistic"]
    assert stack.metrics["val_scoring"] == "out-of-fold" and stack.metrics["cv_folds"] == 5
    assert stack.metrics["val_accuracy_in_sample"] >= stack.metrics["val_accuracy"]


def test_validation_folds_are_stratified_seeded_and_capped_by_the_rarest_class():
    from ensembles.crossfit import cross_fit, validation_folds

    y = np.array([0] * 12 + [1] * 9 + [2] * 3)
    folds = validation_folds(y, 5, seed=1)
    assert len(folds) == 3  # class 2 has three rows
    test_rows = np.sort(np.concatenate([t for _, t in folds]))
    np.testing.assert_array_equal(test_rows, np.arange(len(y)))
    for train, test in folds:
        assert set(np.unique(y[train])) == {0, 1, 2} and np.bincount(y[test]).tolist() == [4, 3, 1]
    again = validation_folds(y, 5, seed=1)
    other = validation_folds(y, 5, seed=2)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, again, strict=True))
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(folds, other, strict=True))
    with pytest.raises(ValueError, match="smallest class has 1"):
        validation_folds(np.array([0, 0, 1, 1, 2]), 5, seed=0)
    with pytest.raises(ValueError, match="folds must be an integer >= 2"):
        validation_folds(y, 1, seed=0)
    overlapping = [(np.arange(4), np.arange(2)), (np.arange(2, 4), np.arange(2, 4))]
    with pytest.raises(ValueError, match="not out-of-fold"):
        cross_fit(lambda tr, te: np.zeros((len(te), 2)), overlapping, 4, 2)


def test_fitted_ensembles_are_skipped_rather_than_scored_in_sample(tmp_path, caplog):
    """A class with one validation row leaves no two folds: no top-k, greedy or stacking row."""
    store = make_fake_run(tmp_path / "run", n_val=21, failed=False)  # class 0 has 3, others 2
    y_val = store.labels("val")
    y_val[0] = 1  # ...and now class 0 has 2, class 1 has 3: still fine
    store.save_array("y_val", y_val)
    assert {e.name for e in build_ensembles(store, {}, seed=0)} >= {"greedy", "top-3"}
    y_val[y_val == 2] = np.array([2, 3])  # class 2 keeps a single row
    store.save_array("y_val", y_val)
    with caplog.at_level("WARNING"):
        names = [e.name for e in build_ensembles(store, {}, seed=0)]
    assert names == ["average-all"]
    assert "no out-of-fold scores" in caplog.text and "smallest class has 1" in caplog.text
    # nor is any temperature left from the first build: none was fit on these labels
    assert all(m.calibration() is None for m in store.members() if m.ok)
    assert store.ensemble("average-all").calibration() is None
