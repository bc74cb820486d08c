"""The planner's priors (benchmark/plan/priors.toml): every measured figure is the validation
figure of the docs/results file it names, the curve's constants are what those figures give, and
a member's prior depends on its strategy, input size and feature options and says what it rests on."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from benchmark.plan import value

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"


def _results(name: str) -> dict:
    return json.loads((RESULTS / f"{name}.json").read_text())


def _cell(name: str, row: dict, column: str) -> float:
    """The ``column`` of the one table row of docs/results/<name>.json that matches ``row``, as a
    fraction (tables write accuracies as fractions or as percents)."""
    rows = [r for r in _results(name)["table"] if all(r.get(k) == v for k, v in row.items())]
    assert len(rows) == 1, f"{name}: {len(rows)} rows match {row}"
    figure = float(rows[0][column])
    return figure / 100 if figure > 1 else figure


def _raw_priors() -> list[dict]:
    return value._table()["prior"]


def test_every_measured_prior_is_the_validation_figure_of_the_file_it_names():
    measured = [p for p in _raw_priors() if p["basis"] == "measured"]
    assert len(measured) >= 10
    for p in measured:
        column = p["column"]
        assert "val" in column.lower(), (
            f"{p['architecture']}: {column!r} is not a validation column"
        )
        assert _cell(p["source"], p["row"], column) == pytest.approx(p["accuracy"], abs=5e-4), p


def test_every_prior_names_a_zoo_architecture_a_strategy_and_what_it_rests_on():
    import zoo
    from benchmark.config.schema import STRATEGIES

    names = set(zoo.list_models())
    for p in _raw_priors():
        assert p["architecture"] in names, p["architecture"]
        assert p["strategy"] == "scratch" or p["strategy"] in STRATEGIES, p
        assert p["basis"] in ("measured", "reference", "guess") and p["source"].strip(), p
        assert 0 < p["accuracy"] <= 1 and p["epochs"] > 0 and p["train_images"] > 0, p
    for name, constant in value._table()["curve"].items():
        assert constant["basis"] in ("measured", "guess") and constant["source"].strip(), name


def test_the_resolution_and_head_data_exponents_are_what_the_validation_figures_give():
    """resolution_beta from Lite0's 128 and 160 px validation errors; alpha_head from its 96 px
    figure on 10,000 images against the 128 px one on 45,000, the resolution taken out."""
    lite0 = {"backbone": "Lite0", "features": "5 levels + mirrors"}
    err128 = 1 - _cell("feature-sweep", {**lite0, "size px": 128}, "val %")
    err160 = 1 - _cell("feature-sweep", {**lite0, "size px": 160}, "val %")
    beta = math.log(err128 / err160) / math.log(160 / 128)
    assert value.curve_constant("resolution_beta") == pytest.approx(beta, abs=0.01)
    err96_10k = 1 - _cell(
        "cpu-tour-dbb660a", {"model": "efficientnet_lite0 / feature-extraction @96px"}, "val acc"
    )
    err96_45k = err128 * (96 / 128) ** -beta
    alpha = math.log(err96_10k / err96_45k) / math.log(45_000 / 10_000)
    assert value.curve_constant("alpha_head") == pytest.approx(alpha, abs=0.01)


def test_the_end_to_end_curve_is_what_the_recipe_runs_give_on_validation():
    """tau_finishing_epochs from fastnet's 10,000-image runs at 2 and 4 epochs, alpha from its
    4-epoch runs on 10k / 20k / 45k images (docs/results/prior-curve.json, val_tta column); and
    the curve through the 45k figure lands on the 20k one, which neither constant was fitted to."""
    import numpy as np

    rows = _results("prior-curve")["table"]

    def skill(r):
        return (r["val_tta"] - 0.1) / 0.9

    two, four = (
        next(r for r in rows if r["train images"] == 10_000 and r["epochs"] == e) for e in (2, 4)
    )
    tau = -2 / math.log(skill(four) / skill(two) - 1)
    assert value.curve_constant("tau_finishing_epochs") == pytest.approx(tau, abs=0.01)
    at_four = [r for r in rows if r["epochs"] == 4]
    images = np.array([r["train images"] for r in at_four], dtype=float)
    ceilings = np.array([skill(r) for r in at_four]) / (1 - math.exp(-4 / tau))
    alpha = -np.polyfit(np.log(images), np.log(1 - ceilings), 1)[0]
    assert value.curve_constant("alpha") == pytest.approx(alpha, abs=0.01)
    full = next(r for r in at_four if r["train images"] == 45_000)
    ref = value.Reference(full["val_tta"], 4, 45_000)
    twenty = next(r for r in at_four if r["train images"] == 20_000)
    predicted = value.curve(ref, 4, 20_000, 10, value.curve_constant("tau_finishing_epochs"))
    assert predicted == pytest.approx(twenty["val_tta"], abs=0.01)


def test_a_prior_depends_on_strategy_input_size_and_feature_options():
    five_mirrored = {"feature_levels": 5, "flip_features": True}
    exact = value.prior("efficientnet_lite0", "feature-extraction", 160, five_mirrored)
    assert (exact.accuracy, exact.basis, exact.note) == (0.862, "measured", "")
    assert exact.source == "docs/results/feature-sweep.json"
    last_layer = value.prior(
        "efficientnet_lite0",
        "feature-extraction",
        160,
        {"feature_levels": 1, "flip_features": False},
    )
    assert last_layer.accuracy == 0.831 and last_layer.basis == "measured"
    at_128 = value.prior("efficientnet_lite0", "feature-extraction", 128, five_mirrored)
    assert at_128.accuracy == 0.851 and at_128.train_images == 45_000
    # a size with no figure of its own: the nearest, scaled (smaller input, lower), and said so
    at_112 = value.prior("efficientnet_lite0", "feature-extraction", 112, five_mirrored)
    assert at_112.accuracy < at_128.accuracy and at_112.basis == "measured"
    assert "scaled from" in at_112.note and "to 112 px" in at_112.note
    # another strategy: no figure of its own, so a guess naming the figure it started from
    tuned = value.prior("efficientnet_lite0", "fine-tuning", 224, {})
    assert tuned.basis == "guess" and "feature-extraction" in tuned.note
    assert "guess" in tuned.describe() and "feature-sweep" in tuned.describe()
    # a from-scratch net: its own measured figure, unscaled
    fastnet = value.prior("fastnet")
    assert fastnet.basis == "measured" and fastnet.source.endswith("speedrun-fastnet.json")
    assert value.prior("airbench94").basis == "reference"


def test_a_backbone_members_size_comes_from_its_spec_then_its_hp_then_its_architecture():
    from types import SimpleNamespace

    spec = SimpleNamespace(
        architecture="efficientnet_lite0", strategy="fine-tuning", input_size=None, hp={}
    )
    import zoo

    assert value.member_size(spec) == zoo.get("efficientnet_lite0").input_size
    assert value.member_size(SimpleNamespace(**{**vars(spec), "hp": {"input_size": 128}})) == 128
    assert value.member_size(SimpleNamespace(**{**vars(spec), "input_size": 96})) == 96
    assert value.member_size(SimpleNamespace(**{**vars(spec), "strategy": None})) is None


def test_the_curve_takes_its_tau_from_the_members_schedule_and_strategy():
    from types import SimpleNamespace

    def task(schedule, strategy=None):
        return SimpleNamespace(
            spec=SimpleNamespace(strategy=strategy), training={"schedule": schedule}
        )

    assert value.tau_for(task("triangle")) == value.curve_constant("tau_finishing_epochs")
    assert value.tau_for(task("cosine")) == value.curve_constant("tau_finishing_epochs")
    assert value.tau_for(task("constant")) == value.curve_constant("tau_epochs") == 3.0
    assert value.tau_for(task("constant", "feature-extraction")) == value.curve_constant(
        "tau_head_epochs"
    )
    assert value.curve_constant("tau_finishing_epochs") < value.curve_constant("tau_epochs")
