"""``zoobench compare RUN_A RUN_B``: two leaderboards side by side on one test split, McNemar of
the bests, and a one-line refusal naming what differs when the runs were not scored alike."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import shrunk_smoke_toml

from benchmark.cli.app import main
from benchmark.store.runstore import RunStore
from reports.leaderboard import leaderboard
from reports.stats import format_pvalue, mcnemar
from tests.fake_run import make_fake_run
from tests.test_schema import run_without_backends


def share_split(source: RunStore, target: RunStore) -> None:
    """Give ``target`` the test pictures of ``source`` (make_fake_run draws them from its seed)."""
    target.save_array("x_test", source.load_array("x_test"))


def best_correct(store: RunStore) -> tuple[str, np.ndarray]:
    """The leaderboard's first row (the ranked best) and whether it got each test image right,
    read straight from the store's entries."""
    best = leaderboard(store).iloc[0]
    entry = next(e for e in [*store.members(), *store.ensembles()] if e.key == best["id"])
    return str(best["model"]), entry.probs("test").argmax(axis=1) == store.labels("test")


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple[RunStore, RunStore]:
    """Two fake runs of different seeds and accuracies sharing one test split."""
    root = tmp_path_factory.mktemp("compare")
    a = make_fake_run(root / "alpha", accuracies=(0.85, 0.7), n_test=400, seed=0)
    b = make_fake_run(root / "beta", accuracies=(0.6, 0.75, 0.5), n_test=400, seed=1)
    share_split(a, b)
    return a, b


def test_compare_puts_both_leaderboards_side_by_side_and_tests_the_bests(pair, capsys):
    a, b = pair
    assert main(["compare", str(a.root), str(b.root)]) == 0
    out = capsys.readouterr().out
    head_table, middle, board_table = out.strip().split("\n\n")
    board_a, board_b = leaderboard(a), leaderboard(b)
    # Every row of both boards, labelled by its run, with the report's formatting.
    assert len(board_table.splitlines()) == 2 + len(board_a) + len(board_b)
    for run, board in (("alpha", board_a), ("beta", board_b)):
        for _, row in board.iterrows():
            lines = board_table.splitlines()
            line = next(ln for ln in lines if f"| {run} " in ln and f"| {row.model} " in ln)
            if row.status == "done":
                assert f"{100 * row.test_accuracy:.2f}% [" in line and "| done " in line
            else:
                assert "failed: loss became NaN" in line
    # The head: each run's profile, data source, seed, test size and best row.
    head = head_table.splitlines()[2:]
    assert len(head) == 2 and head[0].startswith("| alpha ") and head[1].startswith("| beta ")
    assert "| fake " in head[0] and "| synthetic probabilities " in head[0] and "| 0 " in head[0]
    assert "| 1 " in head[1] and "| 400 " in head[1]
    assert f"| {board_a.model[0]} " in head[0] and f"| {board_b.model[0]} " in head[1]
    assert "same 400 test images of synthetic probabilities" in middle
    # McNemar of the two bests, from their stored test probabilities.
    (name_a, correct_a), (name_b, correct_b) = best_correct(a), best_correct(b)
    expected = mcnemar(correct_a, correct_b)
    assert f"A = alpha: {name_a} ({correct_a.mean():.2%}), B = beta: {name_b}" in middle
    assert f"on {expected.a_only} images" in middle and format_pvalue(expected.pvalue) in middle


def test_json_and_html_carry_the_same_comparison(pair, tmp_path, capsys):
    a, b = pair
    page = tmp_path / "compare.html"
    assert main(["compare", str(a.root), str(b.root), "--json", "--html", str(page)]) == 0
    data = json.loads(capsys.readouterr().out)
    expected = mcnemar(best_correct(a)[1], best_correct(b)[1])
    assert data["mcnemar"]["pvalue"] == expected.pvalue
    assert (data["mcnemar"]["a_only"], data["mcnemar"]["b_only"]) == (
        expected.a_only,
        expected.b_only,
    )
    assert [r["run"] for r in data["runs"]] == ["alpha", "beta"]
    assert [r["seed"] for r in data["runs"]] == [0, 1]
    assert data["test_split"] == {
        "images": 400,
        "source": "synthetic probabilities",
        "fingerprint": None,
    }
    assert [r["run"] for r in data["rows"]] == ["alpha"] * 3 + ["beta"] * 4
    failed = next(r for r in data["rows"] if r["status"] == "failed")
    assert failed["test_accuracy"] is None and failed["rank"] is None  # NaN / NA as JSON null
    assert data["rows"][0]["test_accuracy"] == data["runs"][0]["test_accuracy"]

    text = page.read_text()
    assert text.startswith("<!DOCTYPE html>") and "<script" not in text and "http" not in text
    assert "alpha" in text and "beta" in text and format_pvalue(expected.pvalue) in text
    assert text.count("<tr>") == 1 + 2 + 1 + 7  # the two tables: headers and rows
    assert sorted(p.name for p in tmp_path.iterdir()) == ["compare.html"]  # no temp file left


def test_compare_answers_where_keras_and_tensorflow_cannot_be_imported(pair, tmp_path):
    a, b = pair
    done = run_without_backends(
        f"""
        from benchmark.cli.app import main
        assert main(["compare", {str(a.root)!r}, {str(b.root)!r}, "--json"]) == 0
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["runs"][1]["run"] == "beta"


def _edit_run(store: RunStore, **data) -> None:
    meta = store.read_run()
    store.write_run({**meta, "data": {**meta["data"], **data}})


def _refusal_cases(root: Path, a: RunStore) -> dict[str, tuple[Path, str]]:
    """Runs that must not be compared with ``a``, and the reason each refusal must give."""
    small = make_fake_run(root / "small", accuracies=(0.8,), n_test=200, seed=0)
    relabelled = make_fake_run(root / "relabelled", accuracies=(0.8,), n_test=400, seed=0)
    share_split(a, relabelled)
    y = relabelled.labels("test")
    relabelled.save_array("y_test", np.roll(y, 1))  # same size and class counts, 400 labels moved
    redrawn = make_fake_run(root / "redrawn", accuracies=(0.8,), n_test=400, seed=5)  # own x_test
    _edit_run(redrawn, split={"test_size": 400})  # a seeded subset of a larger test set
    official = make_fake_run(root / "official", accuracies=(0.8,), n_test=400, seed=0)
    share_split(a, official)
    _edit_run(official, source="CIFAR-10 (official python batches)")
    other_files = make_fake_run(root / "other-files", accuracies=(0.8,), n_test=400, seed=0)
    share_split(a, other_files)
    _edit_run(other_files, fingerprint="feedbeef" * 8)
    unfinished = make_fake_run(root / "all-failed", accuracies=(), n_test=400, seed=0)
    (root / "holiday-photos").mkdir()
    src = "synthetic probabilities"
    return {
        "size": (
            small.root,
            f"test splits differ: {a.root} has 400 test images of {src}, {small.root} 200",
        ),
        "labels": (
            relabelled.root,
            f"test splits differ: {a.root} and {relabelled.root} have "
            f"400 test images of {src} each, but 400 of their labels differ",
        ),
        "images": (
            redrawn.root,
            "but different stored test images (each seed draws its own test_size subset",
        ),
        "source": (
            official.root,
            f"{a.root}'s 400 test images are from {src}, {official.root}'s "
            "from CIFAR-10 (official python batches)",
        ),
        "fingerprint": (
            other_files.root,
            "read different files of synthetic probabilities (data fingerprint ",
        ),
        "no rows": (unfinished.root, f"{unfinished.root} has no finished members or ensembles"),
        "not a run": (root / "holiday-photos", "is not a zoobench run folder"),
        "missing": (root / "nowhere", f"{root / 'nowhere'} does not exist"),
    }


def test_runs_scored_on_different_test_splits_are_refused_with_what_differs(tmp_path, capsys):
    a = make_fake_run(tmp_path / "a", accuracies=(0.8,), n_test=400, seed=0)
    _edit_run(a, fingerprint="0123abcd" * 8)  # a fingerprint on one side only is not a difference
    for case, (other, reason) in _refusal_cases(tmp_path, a).items():
        assert main(["compare", str(a.root), str(other)]) == 2, case
        err = capsys.readouterr().err.strip()
        assert err.startswith("zoobench: error: ") and "\n" not in err, (case, err)
        assert reason in err, (case, err)


# The issue's own check: two real smoke runs (the shrunk smoke profile through `zoobench run`), one
# per seed, compared. Their whole test set (the in-repo copy's 100 pictures) is shared across seeds;
# a test_size subset would be drawn per seed, which compare refuses (checked above on fake runs).
def test_two_smoke_runs_of_different_seeds_compare(tmp_path, tiny_jpg, capsys):
    pytest.importorskip("keras")
    profile = shrunk_smoke_toml(tmp_path / "smoke.toml", report=False, ensembles=True)
    text = profile.read_text()
    assert text.count("test_size = 50") == 1, "shrunk_smoke_toml changed its test_size"
    text = text.replace("test_size = 50", "test_size = 100")  # the whole test set
    # Robustness checks (where the profile has them) are no part of a comparison: off, for time.
    profile.write_text(
        text.replace("[robustness]\nenabled = true", "[robustness]\nenabled = false")
    )
    outs = [tmp_path / "seed0", tmp_path / "seed1"]
    for seed, out in enumerate(outs):
        assert (
            main(
                [
                    "run",
                    str(profile),
                    "--out",
                    str(out),
                    "--data-dir",
                    str(tiny_jpg),
                    "--seed",
                    str(seed),
                ]
            )
            == 0
        )
    capsys.readouterr()
    page = tmp_path / "compare.html"
    assert main(["compare", *map(str, outs), "--json", "--html", str(page)]) == 0
    data = json.loads(capsys.readouterr().out)
    stores = [RunStore(out) for out in outs]
    assert [r["seed"] for r in data["runs"]] == [0, 1]
    assert {r["source"] for r in data["runs"]} == {"CIFAR-10 (JPEG copy)"}
    assert data["test_split"]["images"] == 100
    for store, name in zip(stores, ("seed0", "seed1"), strict=True):
        rows = [r for r in data["rows"] if r["run"] == name]
        board = leaderboard(store)
        assert [r["model"] for r in rows] == list(board.model) and len(rows) >= 4
        assert {"ensemble", "scratch"} <= {r["kind"] for r in rows}
    expected = mcnemar(best_correct(stores[0])[1], best_correct(stores[1])[1])
    assert data["mcnemar"]["pvalue"] == expected.pvalue
    assert "seed0" in page.read_text() and "seed1" in page.read_text()
