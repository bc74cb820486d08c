"""Profiles: every shipped one loads; mistakes name the file and the key; durations parse."""

from __future__ import annotations

import pytest

from benchmark.config.profiles import load_profile, parse_profile, shipped_profiles
from benchmark.errors import ZoobenchError
from benchmark.formatting import duration, parse_duration
from benchmark.plan.budget import Estimate, fit_to_budget


def test_shipped_profiles_load_and_name_real_architectures():
    assert {"smoke", "cpu-quick", "standard", "full"} <= set(shipped_profiles())
    quick = load_profile(None)  # the default
    assert quick.name == "cpu-quick" and quick.budget_seconds == 1800
    # the default scores on the full official test split and trains on the full training split
    assert not {"train_size", "val_size", "test_size"} & set(quick.data)
    lite = [m for m in quick.members if m.strategy == "feature-extraction"]
    assert {m.architecture for m in lite} == {"efficientnet_lite0", "efficientnet_lite2"}
    tour = load_profile("cpu-tour")
    assert any(m.tune for m in tour.members) and tour.data["test_size"] == 5000
    full = load_profile("full")
    import zoo

    assert {m.architecture for m in full.members} == set(zoo.list_models())
    strategies = {m.strategy for m in full.members if m.strategy}
    assert strategies == {"feature-extraction", "fine-tuning", "progressive-unfreezing"}


def test_a_users_file_is_accepted_by_path(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('[[members]]\narchitecture = "seed_cnn"\nseeds = 2\n')
    profile = load_profile(path)
    assert profile.name == "mine" and profile.members[0].seeds == 2
    assert profile.members[0].training["epochs"] == 10  # training defaults filled in


BASE = {"members": [{"architecture": "seed_cnn"}]}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"colour": 1}, r"my\.toml: colour: unknown key"),
        ({"budget": "soon"}, r"my\.toml: budget: cannot read 'soon'"),
        ({"data": {"train_size": 0}}, r"data\.train_size: must be a whole number >= 1, got 0$"),
        (
            {"training": {"optimizer": "adagrad"}},
            r"training\.optimizer: must be one of adam, adamw, rmsprop, sgd, muon, got 'adagrad'$",
        ),
        ({"tuner": {"algorithm": "genetic"}}, r"tuner\.algorithm: must be one of"),
        ({"tuner": {"search": {"dropout": [0.1]}}}, r"tuner\.search\.dropout: cannot be searched"),
        ({"members": []}, r"members: a profile needs at least one"),
        (
            {"members": [{"architecture": "resnet2O"}]},
            r"members\[0\]\.architecture: unknown architecture",
        ),
        (
            {"members": [{"architecture": "seed_cnn", "strategy": "fine-tuning"}]},
            r"members\[0\]\.strategy",
        ),
        (
            {"members": [{"architecture": "efficientnet_lite0"}]},
            r"members\[0\]\.strategy: .* name a strategy",
        ),
        (
            {"members": [{"architecture": "seed_cnn", "seeds": 2, "bagging": 3}]},
            r"either seeds or bagging",
        ),
        (
            {"members": [{"architecture": "seed_cnn", "tune": {"top_k": 9}}]},
            r"tune\.top_k: cannot exceed",
        ),
        (
            {"members": [{"architecture": "seed_cnn"}, {"architecture": "seed_cnn"}]},
            r"repeated: seed_cnn",
        ),
        ({"members": [{"architecture": "seed_cnn", "augment": "flip"}]}, r"members\[0\]\.augment"),
        (
            {
                "members": [
                    {
                        "architecture": "efficientnet_lite0",
                        "strategy": "feature-extraction",
                        "transfer": {"feature_levels": 2.5},
                    }
                ]
            },
            r"members\[0\]\.transfer\.feature_levels: must be a whole number >= 1, got 2\.5$",
        ),
        (
            {
                "members": [
                    {
                        "architecture": "efficientnet_lite0",
                        "strategy": "feature-extraction",
                        "transfer": {"head_trials": "4"},
                    }
                ]
            },
            r"members\[0\]\.transfer\.head_trials: must be a whole number >= 1, got '4'$",
        ),
    ],
)
def test_mistakes_name_the_file_and_key(change, message):
    with pytest.raises(ZoobenchError, match=message):
        parse_profile({**BASE, **change}, "my.toml")


def test_bad_toml_and_unknown_names(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[[members]\n")
    with pytest.raises(ZoobenchError, match="bad.toml: not valid TOML"):
        load_profile(bad)
    with pytest.raises(ZoobenchError, match="unknown profile 'quick'.*cpu-quick"):
        load_profile("quick")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("30m", 1800), ("1h", 3600), ("1h30m", 5400), ("45", 45), ("2.5m", 150)],
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "1d", "m30", "-5", "0s", "1h30"])
def test_bad_durations(text):
    with pytest.raises(ZoobenchError, match="--budget"):
        parse_duration(text)


def test_the_plan_without_values_keeps_shortens_or_drops_in_profile_order():
    estimates = [
        Estimate(10, 5, 10),
        Estimate(10, 5, 10),
        Estimate(1, 1, 4, trials=8, trial_epochs=2),
    ]
    # 105 s each for the first two; the search costs 8 * (2 + 1) + 4 + 1 = 29 s
    kept = fit_to_budget(estimates, 1000, reserve_fraction=0)
    assert [d.action for d in kept] == ["run", "run", "run"]
    tight = fit_to_budget(estimates, 150, reserve_fraction=0)
    assert tight[0].action == "run"
    # the most epochs that fit the 45 s left: 5 + 4 * 10
    assert tight[1].action == "shortened" and tight[1].changes == {"epochs": 4}
    assert tight[1].estimate.seconds <= 45
    assert "shortened" in tight[1].note
    searched = fit_to_budget(estimates, 225, reserve_fraction=0)  # 15 s left for the search
    assert searched[2].action == "shortened" and searched[2].changes == {"trials": 3}
    none_left = fit_to_budget(estimates, 30, reserve_fraction=0)
    assert none_left[0].action == "shortened" and none_left[1].action == "dropped"
    assert "needs ~" in none_left[1].note
    assert duration(5400) == "1h30m" and duration(75) == "1m15s"
