"""A run logged to MLflow (a SQLite store): one parent, one child per leaderboard row, with params,
per-epoch metrics, test figures and artifacts; a rerun that keeps its members logs nothing twice.
Skipped without MLflow (CI's step 2 installs the extra)."""

from __future__ import annotations

import pandas as pd
import pytest

pytest.importorskip("mlflow")

import mlflow  # noqa: E402 - after the skip

from benchmark.cli.app import main  # noqa: E402
from benchmark.config.profiles import parse_profile  # noqa: E402
from benchmark.run.runner import Runner  # noqa: E402
from benchmark.run.tracking import TAG_ENTRY, Tracker, flatten  # noqa: E402

PROFILE = {
    "name": "tracked",
    "seed": 0,
    "deterministic": True,
    "data": {"dataset": "cifar10", "train_size": 100, "val_size": 50, "test_size": 50},
    "training": {"epochs": 2, "batch_size": 50, "early_stopping_patience": 0},
    "members": [
        {"architecture": "seed_cnn", "name": "a", "hp": {"width": 0.5, "dense_units": 0}},
        {
            "architecture": "seed_cnn",
            "name": "b",
            "hp": {"width": 0.5, "dense_units": 0, "dropout": 0.0},
            "seeds": 2,
        },
    ],
    "ensembles": {"methods": ["average-all", "seeds"]},
    "report": {"enabled": False},
}


def runs_of(uri: str) -> pd.DataFrame:
    mlflow.set_tracking_uri(uri)
    return mlflow.search_runs(search_all_experiments=True)


def test_a_run_is_one_parent_and_a_child_per_leaderboard_row_logged_once(tmp_path, tiny_jpg):
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    out = tmp_path / "run"

    def run() -> list[str]:
        lines: list[str] = []
        profile = parse_profile(PROFILE, "tracking test")
        Runner(
            profile, out, data_dir=str(tiny_jpg), progress=lines.append, tracker=Tracker(uri)
        ).run()
        return lines

    lines = run()
    board = pd.read_csv(out / "leaderboard.csv")
    assert len(board) == 5  # a, b's two seeds, average-all, seeds-b
    runs = runs_of(uri)
    parents = runs[runs["tags.mlflow.parentRunId"].isna()]
    children = runs[runs["tags.mlflow.parentRunId"].notna()]
    assert len(parents) == 1 and len(children) == len(board)
    assert set(children["tags.mlflow.parentRunId"]) == set(parents["run_id"])
    assert sorted(children[f"tags.{TAG_ENTRY}"]) == sorted(board["id"])
    assert any(
        line.startswith(f"mlflow: {len(board)} runs logged, 0 already there") for line in lines
    )
    # a member's child: its config as params, its epochs as steps, its final val and test figures
    row = board[board["model"] == "a"].iloc[0]
    child = children[children[f"tags.{TAG_ENTRY}"] == row["id"]].iloc[0]
    assert child["params.architecture"] == "seed_cnn" and child["params.training.epochs"] == "2"
    assert child["metrics.test_accuracy"] == pytest.approx(row["test_accuracy"])
    assert child["metrics.val_accuracy"] == pytest.approx(row["val_accuracy"])
    client = mlflow.MlflowClient(uri)
    steps = client.get_metric_history(child["run_id"], "val_accuracy")
    history = pd.read_csv(out / row["id"] / "history.csv")
    assert len(steps) == 1 + len(history)  # the final figure and one per epoch
    assert sorted(s.step for s in steps) == sorted([0, *history["epoch"].astype(int)])
    child_files = {a.path for a in client.list_artifacts(child["run_id"])}
    assert {"config.json", "metrics.json", "history.csv"} <= child_files
    parent_files = {a.path for a in client.list_artifacts(parents.iloc[0]["run_id"])}
    assert {"leaderboard.csv", "run.json"} <= parent_files
    assert parents.iloc[0]["params.profile.members.1.seeds"] == "2"
    # the rerun keeps every member and rebuilds the same ensembles: nothing is logged again
    lines = run()
    assert len(runs_of(uri)) == len(runs)
    assert any(f"0 runs logged, {len(board)} already there" in line for line in lines)


def test_flatten_numbers_tables_in_lists_and_keeps_other_lists_whole():
    assert flatten({"hp": {"width": 0.5}, "augment": [{"name": "flip"}], "sizes": [1, 2]}) == {
        "hp.width": 0.5,
        "augment.0.name": "flip",
        "sizes": "[1, 2]",
    }


def test_a_wrong_mlflow_uri_is_one_line_and_exit_2(capsys, tmp_path):
    code = main(["run", "smoke", "--out", str(tmp_path / "r"), "--mlflow", "nosuch://x"])
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        code == 2 and len(err) == 1 and err[0].startswith("zoobench: error: --mlflow nosuch://x:")
    ), err
