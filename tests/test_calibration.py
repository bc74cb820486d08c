"""Temperature scaling: fit on validation, scored out-of-fold, stored beside each entry, reported."""

from __future__ import annotations

import numpy as np
import pytest
from fake_run import make_fake_run

from benchmark.errors import ZoobenchError
from benchmark.metrics import accuracy, log_loss
from ensembles.build import build_ensembles
from ensembles.calibration import apply_temperature, calibrate, fit_temperature
from ensembles.crossfit import validation_folds


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def planted(n: int, temperature: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from softmax(z), probabilities softmax(z / temperature): the right T is known."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 2.0, size=(n, 5))
    truth = softmax(z)
    y = np.array([rng.choice(5, p=row) for row in truth])
    return softmax(z / temperature), y


@pytest.mark.parametrize("true_t", [0.4, 2.5])
def test_the_fitted_temperature_undoes_a_planted_one(true_t):
    probs, y = planted(6000, 1.0 / true_t)  # sharpened (T < 1 undoes it) or flattened
    t = fit_temperature(probs, y)
    assert t == pytest.approx(true_t, rel=0.08)
    assert log_loss(apply_temperature(probs, t), y) < log_loss(probs, y) - 0.02


def test_temperature_keeps_every_argmax_and_one_is_the_identity():
    probs, _ = planted(500, 1.0)
    for t in (0.05, 0.3, 1.0, 7.0, 20.0):
        scaled = apply_temperature(probs, t)
        np.testing.assert_array_equal(scaled.argmax(1), probs.argmax(1))
        np.testing.assert_allclose(scaled.sum(1), 1.0, atol=1e-12)
    np.testing.assert_allclose(apply_temperature(probs, 1.0), probs, atol=1e-12)
    with pytest.raises(ValueError, match="positive finite"):
        apply_temperature(probs, 0.0)


def test_validation_is_scaled_by_the_temperature_of_the_other_folds():
    probs, y = planted(400, 0.5, seed=3)
    test, _ = planted(100, 0.5, seed=4)
    splits = validation_folds(y, 5, seed=0)
    cal = calibrate(probs, test, y, splits, seed=0)
    for (train, rows), t in zip(splits, cal.fold_temperatures, strict=True):
        assert t == pytest.approx(fit_temperature(probs[train], y[train]))
        np.testing.assert_allclose(cal.val_probs[rows], apply_temperature(probs[rows], t))
    assert cal.temperature == pytest.approx(fit_temperature(probs, y))
    np.testing.assert_allclose(cal.test_probs, apply_temperature(test, cal.temperature))
    assert len(set(cal.fold_temperatures)) == 5  # five different fits, not one reused
    assert cal.val_loss_calibrated == pytest.approx(log_loss(cal.val_probs, y))
    assert cal.val_loss_calibrated < cal.val_loss


def test_every_member_and_ensemble_is_calibrated_by_default_and_accuracy_is_unchanged(tmp_path):
    store = make_fake_run(tmp_path / "run")
    y_val, y_test = store.labels("val"), store.labels("test")
    entries = [*(m for m in store.members() if m.ok), *build_ensembles(store, {}, seed=0)]
    assert len(entries) == 8
    for e in entries:
        record = e.calibration()
        assert record["method"] == "temperature" and record["folds"] == 5
        assert 0.05 <= e.temperature <= 20.0
        for split, y in (("val", y_val), ("test", y_test)):
            raw, cal = e.probs(split, calibrated=False), e.probs(split)
            assert not np.allclose(raw, cal, atol=1e-3), (e.name, split)
            assert accuracy(cal, y) == accuracy(raw, y)
        np.testing.assert_allclose(
            e.probs("test"), apply_temperature(e.probs("test", False), e.temperature), atol=1e-6
        )
        assert record["val_loss_calibrated"] == pytest.approx(log_loss(e.probs("val"), y_val))
        assert record["val_loss"] == pytest.approx(log_loss(e.probs("val", False), y_val))
    # averaging flattens the members' probabilities: the temperature sharpens them back
    average = store.ensemble("average-all")
    assert average.temperature < 0.5
    assert log_loss(average.probs("test"), y_test) < log_loss(average.probs("test", False), y_test)
    assert store.best_pointer()["temperature"] == pytest.approx(
        store.find(store.best_pointer()["id"]).temperature
    )


def test_calibrate_false_removes_earlier_temperatures(tmp_path):
    store = make_fake_run(tmp_path / "run")
    build_ensembles(store, {}, seed=0)
    assert store.member("member00").temperature is not None
    built = build_ensembles(store, {"calibrate": False}, seed=0)
    assert all(m.calibration() is None for m in store.members())
    assert all(e.calibration() is None for e in built)
    member = store.member("member00")
    np.testing.assert_array_equal(member.probs("test"), member.probs("test", calibrated=False))
    assert store.best_pointer()["temperature"] is None


def test_an_edited_calibration_or_source_is_refused_and_reported_uncalibrated(tmp_path):
    from reports.leaderboard import leaderboard

    store = make_fake_run(tmp_path / "run", failed=False)
    build_ensembles(store, {"methods": ["average-all"]}, seed=0)
    member = store.member("member01")
    scaled = member.path / "calibrated_test_probs.npy"
    np.save(scaled, np.load(scaled)[::-1])
    with pytest.raises(ZoobenchError, match="calibrated_test_probs.npy is missing or changed"):
        member.probs("test")
    board = leaderboard(store)
    row = board[board["id"] == "members/member01"].iloc[0]
    assert np.isnan(row["temperature"]) and row["ece"] == row["ece_uncalibrated"]
    other = store.member("member02")  # its own probabilities changed after calibration
    np.save(other.path / "val_probs.npy", other.probs("val", calibrated=False)[::-1])
    with pytest.raises(ZoobenchError, match="val_probs.npy is missing or changed"):
        other.calibration()


def test_the_keras_layer_computes_the_same_formula_and_loads_in_safe_mode(tmp_path):
    import keras

    import zoo
    from benchmark.modelfile import save_model
    from ensembles.calibration import PROB_FLOOR
    from zoo.layers import TemperatureScaling

    probs, _ = planted(64, 0.3, seed=5)
    probs[0] = np.eye(5)[2]  # exact zeros: floored, as in NumPy
    probs = probs.astype(np.float32)
    inputs = keras.Input(shape=(5,))
    model = keras.Model(inputs, TemperatureScaling(0.37, PROB_FLOOR, name="temperature")(inputs))
    np.testing.assert_allclose(
        model.predict(probs, verbose=0), apply_temperature(probs, 0.37), atol=1e-6
    )
    path = tmp_path / "t.keras"
    save_model(model, path)
    zoo.list_models()
    back = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(
        back.predict(probs, verbose=0), apply_temperature(probs, 0.37), atol=1e-6
    )
    assert not back.trainable_weights
    with pytest.raises(ValueError, match="must be positive"):
        TemperatureScaling(0.0, PROB_FLOOR)


def test_the_leaderboard_shows_ece_and_nll_before_and_after_and_marks_out_of_fold_rows(tmp_path):
    from reports import scoring
    from reports.build import write_report
    from reports.leaderboard import OUT_OF_FOLD_NOTE, console_lines, display_table

    store = make_fake_run(tmp_path / "run")
    build_ensembles(store, {}, seed=0)
    report = write_report(store)
    board = report.board.set_index("model")
    y_test = store.labels("test")
    for name, key in (("average-all", "ensembles/average-all"), ("net0", "members/member00")):
        entry = store.find(key.split("/")[1])
        row = board.loc[name]
        raw, cal = entry.probs("test", calibrated=False), entry.probs("test")
        assert row["ece"] == pytest.approx(scoring.expected_calibration_error(cal, y_test))
        assert row["ece_uncalibrated"] == pytest.approx(
            scoring.expected_calibration_error(raw, y_test)
        )
        assert row["nll"] == pytest.approx(log_loss(cal, y_test))
        assert row["nll_uncalibrated"] == pytest.approx(log_loss(raw, y_test))
        assert row["temperature"] == pytest.approx(entry.temperature)
        assert row["test_accuracy"] == pytest.approx(accuracy(raw, y_test))
    assert board.loc["average-all", "ece"] < board.loc["average-all", "ece_uncalibrated"]
    assert list(board["val_out_of_fold"][board["val_out_of_fold"]].index) == sorted(
        ["top-3", "greedy", "stacking-logistic"], key=list(board.index).index
    )
    shown = display_table(report.board).set_index("Model")
    ece = board.loc["greedy"]
    assert shown.loc["greedy", "ECE"] == f"{ece['ece_uncalibrated']:.3f} \u2192 {ece['ece']:.3f}"
    assert shown.loc["greedy", "Val acc."].endswith("\u2020")
    assert not shown.loc["average-all", "Val acc."].endswith("\u2020")
    markdown = (store.report_dir / "README.md").read_text()
    assert OUT_OF_FOLD_NOTE in markdown and "before \u2192 after temperature scaling" in markdown
    assert OUT_OF_FOLD_NOTE in console_lines(report.board, store)
    saved = store.saved_leaderboard().set_index("model")
    assert console_lines(saved.reset_index(), store)[-1] == OUT_OF_FOLD_NOTE  # read back from CSV
