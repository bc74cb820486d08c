"""One ranking: the leaderboard, the report and predict name the same best, ties included."""

from __future__ import annotations

import numpy as np

from benchmark import atomic
from benchmark.metrics import log_loss
from benchmark.store.runstore import ENSEMBLE, MEMBER, rank_key
from ensembles.build import build_ensembles
from ensembles.predictor import check_target
from reports.build import write_report
from reports.figures import picks
from tests.fake_run import make_fake_run


def _tie_member_loss_to_its_probabilities(store, mid: str) -> None:
    """Give a fake member the val_loss of its stored probabilities (fake runs say 1.0)."""
    path = store.member_dir(mid) / "metrics.json"
    metrics = atomic.read_json(path)
    metrics["val_loss"] = log_loss(store.member(mid).probs("val"), store.labels("val"))
    atomic.write_json(path, metrics)


def test_a_member_tied_with_an_ensemble_is_the_best_everywhere(tmp_path):
    # Greedy selection of size one picks the best member alone: the ensemble's validation
    # accuracy and loss equal the member's exactly. The member must win, and everyone must agree.
    store = make_fake_run(tmp_path / "tie", accuracies=(0.8, 0.6), failed=False)
    _tie_member_loss_to_its_probabilities(store, "member00")
    built = build_ensembles(store, {"methods": ["greedy"], "greedy_size": 1}, seed=0)
    greedy = next(e for e in built if e.name == "greedy")
    member = store.member("member00")
    assert greedy.metrics["val_accuracy"] == member.metrics["val_accuracy"]
    assert greedy.metrics["val_loss"] == member.metrics["val_loss"]

    report = write_report(store)
    board = report.board
    assert board["id"].iloc[0] == "members/member00"
    assert board["id"].iloc[1] == "ensembles/greedy"
    assert picks(board).best == "members/member00"
    assert check_target(store.root, "best")["id"] == "member00"
    assert check_target(store.root, "best")["kind"] == MEMBER
    csv_first = (store.leaderboard_csv.read_text().splitlines()[1]).split(",")
    assert "members/member00" in csv_first


def test_the_ranking_orders_by_accuracy_then_loss_then_members_then_name():
    rows = [
        ("done", 0.80, 0.60, ENSEMBLE, "b"),
        ("done", 0.80, 0.50, ENSEMBLE, "c"),
        ("done", 0.80, 0.50, MEMBER, "z"),
        ("done", 0.80, 0.50, MEMBER, "a"),
        ("done", 0.90, None, MEMBER, "nan-loss"),
        ("done", float("nan"), 0.1, MEMBER, "no-accuracy"),
        ("failed", 0.99, 0.01, MEMBER, "failed"),
        ("unfinished", None, None, MEMBER, "running"),
    ]
    order = [r[4] for r in sorted(rows, key=lambda r: rank_key(*r))]
    assert order == ["nan-loss", "a", "z", "c", "b", "no-accuracy", "running", "failed"]


def test_a_torn_json_file_is_named_in_a_one_line_error(tmp_path):
    import pytest

    from benchmark.errors import ZoobenchError

    store = make_fake_run(tmp_path / "torn", accuracies=(0.8,), failed=False)
    store.run_json.write_text('{"name": "torn", "seed"')
    with pytest.raises(ZoobenchError, match=r"run.json is not valid JSON"):
        store.read_run()
    notes: list[str] = []
    (store.member_dir("member00") / "metrics.json").write_text("{")
    assert store.members(notes=notes) == []
    assert "member00/metrics.json is not valid JSON" in notes[0]
    assert np.isfinite(store.labels("val")).all()
