"""Report numbers: the leaderboard, confusion matrices, bootstrap intervals, ECE and McNemar's test."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from fake_run import make_fake_run, noisy_probs
from reports_support import add_fake_ensemble
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

from reports import leaderboard, scoring, stats
from reports.figures import distinct_labels, epoch_axis, pareto_front, shorten, wrap_label
from reports.rundata import load_run


@pytest.fixture(scope="module")
def fake_store(tmp_path_factory):
    store = make_fake_run(tmp_path_factory.mktemp("run") / "fake")
    add_fake_ensemble(store)
    return store


@pytest.fixture(scope="module")
def board(fake_store) -> pd.DataFrame:
    return leaderboard(fake_store, save=True)


def test_leaderboard_scores_equal_scikit_learn_on_the_stored_probabilities(fake_store, board):
    y_test = fake_store.labels("test")
    done = board[board["status"] == "done"]
    assert len(done) == 5 and set(done["kind"]) == {"scratch", "ensemble"}
    for _, row in done.iterrows():
        folder, name = row["id"].split("/")
        predicted = np.load(fake_store.root / folder / name / "test_probs.npy").argmax(1)
        assert row["test_accuracy"] == pytest.approx(accuracy_score(y_test, predicted))
        assert row["f1_macro"] == pytest.approx(f1_score(y_test, predicted, average="macro"))
        assert row["precision_macro"] == pytest.approx(
            precision_score(y_test, predicted, average="macro")
        )
        assert row["recall_macro"] == pytest.approx(
            recall_score(y_test, predicted, average="macro")
        )
        assert row["test_accuracy_low"] <= row["test_accuracy"] <= row["test_accuracy_high"]
        # 400 test images: an interval, not a point.
        assert row["test_accuracy_high"] - row["test_accuracy_low"] > 0.01


def test_leaderboard_columns_costs_and_failed_rows_at_the_bottom(fake_store, board):
    assert list(board["rank"].iloc[:5]) == [1, 2, 3, 4, 5]
    last = board.iloc[-1]
    assert last["status"] == "failed" and last["reason"] == "loss became NaN at epoch 1"
    assert pd.isna(last["rank"]) and math.isnan(last["test_accuracy"])
    net2 = board.set_index("model").loc["net2"]
    assert (net2["params"], net2["flops"], net2["train_seconds"]) == (3000, 30000, 30.0)
    assert net2["images_per_second"] == pytest.approx(1000 / 3)
    # One pandas call filters it, AutoGluon style.
    assert set(board[board.kind == "ensemble"]["method"]) == {"average"}
    saved = pd.read_csv(fake_store.leaderboard_csv)
    assert list(saved["id"]) == list(board["id"])
    assert saved["test_accuracy"].to_numpy() == pytest.approx(
        board["test_accuracy"].to_numpy(), nan_ok=True
    )


def test_rows_are_sorted_by_validation_accuracy_even_when_test_disagrees(tmp_path):
    store = make_fake_run(tmp_path / "run", accuracies=(), failed=True)
    y_val, y_test = store.labels("val"), store.labels("test")
    rng = np.random.default_rng(1)
    for mid, val_acc, test_acc in (("a", 0.6, 0.9), ("b", 0.9, 0.5), ("c", 0.75, 0.7)):
        val_probs = noisy_probs(y_val, val_acc, 10, rng)
        store.write_entry(
            store.member_dir(mid),
            config={
                "name": mid,
                "architecture": mid,
                "kind": "pretrained",
                "strategy": "fine-tuning",
                "input_size": 64,
            },
            metrics={
                "status": "done",
                "val_accuracy": float((val_probs.argmax(1) == y_val).mean()),
                "finished_at": f"2026-01-01T00:00:0{ord(mid) - 96}Z",
            },
            val_probs=val_probs,
            test_probs=noisy_probs(y_test, test_acc, 10, rng),
        )
    store.write_entry(
        store.member_dir("s"),
        config={"name": "skipped-net", "kind": "scratch"},
        metrics={"status": "skipped", "reason": "budget spent"},
    )
    board = leaderboard(store)
    assert list(board["model"]) == ["b", "c", "a", "skipped-net", "broken"]
    assert board["val_accuracy"].iloc[:3].is_monotonic_decreasing
    # Test accuracy disagrees with that order, and the order holds.
    assert not board["test_accuracy"].iloc[:3].is_monotonic_decreasing
    assert list(board["status"]) == ["done", "done", "done", "skipped", "failed"]


def test_val_accuracy_comes_from_val_probs_when_metrics_lack_it(tmp_path):
    store = make_fake_run(tmp_path / "run", accuracies=(0.8,), failed=False)
    entry = store.members()[0]
    metrics = dict(entry.metrics)
    expected = metrics.pop("val_accuracy")
    store.write_entry(entry.path, config=entry.config, metrics=metrics)
    assert leaderboard(store)["val_accuracy"].iloc[0] == pytest.approx(expected)


def test_test_probs_of_the_wrong_shape_leave_scores_out_with_a_note(tmp_path):
    store = make_fake_run(tmp_path / "run", accuracies=(0.8, 0.7), failed=False)
    np.save(store.member_dir("member01") / "test_probs.npy", np.full((7, 10), 0.1, np.float32))
    run = load_run(store)
    board = leaderboard(store)
    row = board.set_index("id").loc["members/member01"]
    assert math.isnan(row["test_accuracy"]) and row["val_accuracy"] > 0.5
    run.probs(run.entry("members/member01"), "test")
    assert any("member01/test_probs.npy has shape (7, 10)" in n for n in run.notes)


def test_confusion_matrix_rows_sum_to_class_sizes_and_to_one_when_normalised(fake_store):
    run = load_run(fake_store)
    probs = run.probs(run.entry("members/member00"), "test")
    counts = scoring.confusion(probs, run.y_test, 10, normalize=False)
    assert counts.sum() == len(run.y_test) == 400
    np.testing.assert_array_equal(counts.sum(axis=1), np.bincount(run.y_test, minlength=10))
    assert np.trace(counts) == (probs.argmax(1) == run.y_test).sum()
    normalised = scoring.confusion(probs, run.y_test, 10, normalize=True)
    np.testing.assert_allclose(normalised.sum(axis=1), 1.0)


def test_bootstrap_interval_contains_the_estimate_is_seeded_and_narrows_with_data():
    rng = np.random.default_rng(0)
    small = rng.random(100) < 0.7
    large = rng.random(10_000) < 0.7
    a = scoring.bootstrap_accuracy(small, seed=3)
    assert a == scoring.bootstrap_accuracy(small, seed=3)
    assert a.estimate == pytest.approx(small.mean())
    assert a.low <= a.estimate <= a.high
    b = scoring.bootstrap_accuracy(large)
    assert (b.high - b.low) < (a.high - a.low) / 5
    # The binomial shortcut matches resampling rows with replacement (same spread, 95% width).
    idx = rng.integers(0, len(small), size=(2000, len(small)))
    ref = np.quantile(small[idx].mean(axis=1), [0.025, 0.975])
    assert a.low == pytest.approx(ref[0], abs=0.03) and a.high == pytest.approx(ref[1], abs=0.03)
    perfect = scoring.bootstrap_accuracy(np.ones(50, bool))
    assert (perfect.low, perfect.estimate, perfect.high) == (1.0, 1.0, 1.0)


def test_ece_on_a_hand_made_case():
    # 10 rows at confidence 0.9 with 8 right (gap 0.1), 10 rows at 0.6 with 6 right (gap 0):
    # ECE = (10 * 0.1 + 10 * 0) / 20 = 0.05.
    probs = np.array([[0.9, 0.1]] * 10 + [[0.6, 0.4]] * 10)
    labels = np.array([0] * 8 + [1] * 2 + [0] * 6 + [1] * 4)
    assert scoring.expected_calibration_error(probs, labels) == pytest.approx(0.05)
    bins = scoring.calibration_bins(probs, labels)
    assert len(bins) == 15 and bins["count"].sum() == 20
    assert sorted(bins.loc[bins["count"] > 0, "accuracy"]) == pytest.approx([0.6, 0.8])
    perfectly_calibrated = np.array([[1.0, 0.0]] * 5)
    assert scoring.expected_calibration_error(perfectly_calibrated, np.zeros(5, int)) == 0.0


def test_mcnemar_matches_hand_computed_p_values():
    def pair(a_only: int, b_only: int, both: int = 50, neither: int = 10):
        a = [True] * a_only + [False] * b_only + [True] * both + [False] * neither
        b = [False] * a_only + [True] * b_only + [True] * both + [False] * neither
        return np.array(a), np.array(b)

    # Exact: 2 vs 8 discordant, p = 2 * P(X <= 2 | n=10, 1/2) = 2 * (1 + 10 + 45) / 1024.
    exact = stats.mcnemar(*pair(2, 8))
    assert (exact.a_only, exact.b_only, exact.method) == (2, 8, "exact binomial")
    assert exact.pvalue == pytest.approx(112 / 1024)
    # Chi-square with continuity correction: (|30 - 10| - 1)^2 / 40 = 9.025, 1 degree of freedom.
    chi = stats.mcnemar(*pair(30, 10))
    assert chi.method.startswith("chi-square") and chi.statistic == pytest.approx(9.025)
    assert chi.pvalue == pytest.approx(math.erfc(math.sqrt(9.025 / 2)))
    assert stats.mcnemar(*pair(0, 0)).pvalue == 1.0
    assert stats.mcnemar(*pair(5, 5)).pvalue == pytest.approx(1.0)


def test_comparisons_pit_the_best_ensemble_against_the_best_member(fake_store, board):
    run = load_run(fake_store)
    found = stats.comparisons(run, board)
    assert [c.title for c in found] == ["Best ensemble vs best single member"]  # same pair as top 2
    c = found[0]
    assert (c.a, c.b) == ("average of 3", "net0")
    assert c.a_accuracy == pytest.approx(board["test_accuracy"].iloc[0])
    assert len(c.per_class) == 10 and c.per_class["support"].sum() == 400
    np.testing.assert_allclose(c.per_class["difference"], c.per_class["a"] - c.per_class["b"])
    # The per-class accuracies average (balanced classes) to the overall accuracies.
    assert c.per_class["a"].mean() == pytest.approx(c.a_accuracy)


def test_describe_run_names_the_data_source_sizes_and_machine(fake_store):
    about = dict(stats.describe_run(load_run(fake_store)))
    assert about["Source"] == "synthetic probabilities"
    assert about["Images (train / val / test)"] == "1,000 / 300 / 400"
    assert about["Machine"] == "cpu count: 2; GPU: none (CPU only)"
    assert about["Started / finished"].endswith("not finished")


def test_pareto_front_keeps_only_undominated_points():
    cost = np.array([1.0, 2.0, 3.0, 4.0, 2.5])
    acc = np.array([0.5, 0.7, 0.6, 0.9, 0.7])
    assert list(pareto_front(cost, acc, lower_is_better=True)) == [0, 1, 3]
    speed = np.array([100.0, 50.0, 10.0])
    assert list(pareto_front(speed, np.array([0.6, 0.5, 0.8]), lower_is_better=False)) == [0, 2]


def test_figure_labels_never_cut_distinct_models_to_the_same_text():
    strategies = [
        "efficientnet_lite0 (feature-extraction)",
        "efficientnet_lite0 (fine-tuning)",
        "efficientnet_lite0 (progressive-unfreezing)",
    ]
    labels = distinct_labels(strategies)
    assert labels == [name.replace(" ", "\n") for name in strategies]
    # Too long for two lines: the start and the distinguishing end stay, "…" marks the cut.
    long = "mobilenet_v3_small (fine-tuning, 96 px) with a learning rate of 0.001"
    label = wrap_label(long, width=24, lines=2)
    lines = label.split("\n")
    assert len(lines) == 2 and all(len(line) <= 24 for line in lines), label
    assert lines[0] == "mobilenet_v3_small" and lines[1].startswith("…") and label.endswith("0.001")
    assert shorten(long, 30) == "mobilenet_v3_sm…rate of 0.001"
    # Names alike in their first and last 24 characters are numbered rather than merged.
    twins = ["a" * 30 + " x " + "b" * 30, "a" * 30 + " y " + "b" * 30]
    numbered = distinct_labels(twins)
    assert len(set(numbered)) == 2 and numbered[0].startswith("1. ")
    assert distinct_labels(twins, width=40, lines=1) == [
        f"{i}. " + shorten(twins[0], 40) for i in (1, 2)
    ]


@pytest.mark.parametrize("epochs, ticks", [([1], [1]), ([1, 2, 3, 4, 5], [1, 2, 3, 4, 5])])
def test_epoch_axis_shows_whole_epochs_only(epochs, ticks):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot(epochs, np.linspace(1.0, 0.5, len(epochs)), marker=".")
    epoch_axis(ax, np.asarray(epochs))
    low, high = ax.get_xlim()
    shown = [t for t in ax.get_xticks() if low <= t <= high]
    plt.close(fig)
    assert shown == ticks  # a one-epoch run: "1", not a 0.945-1.050 span
