"""The budget planner: spend by value, re-plan at the run's real pace, distrust loaded probes.

No training and no Keras: estimates and expected accuracies are made up, probes are faked.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from benchmark.config.profiles import MemberSpec
from benchmark.plan import budget, value
from benchmark.plan import tasks as plan
from benchmark.plan.budget import Estimate, Load, Timing, Worth, fit_to_budget
from benchmark.plan.tasks import Boost, Replanner, Task
from benchmark.plan.value import Reference

DATA = SimpleNamespace(
    name="cifar10", num_classes=10, y_train=np.zeros(10_000, int), input_shape=(32, 32, 3)
)
PROBE = {"architecture": "fastnet", "hp": {}, "shape": [32, 32, 3], "batch": 64, "strategy": None}


def worth(accuracy: float, epochs: int, weight: float = 1.0) -> Worth:
    """Expected accuracy ``accuracy`` at ``epochs``, less when shortened (value.curve)."""
    ref = Reference(accuracy, epochs, 10_000)
    return Worth(
        lambda est: value.curve(ref, est.epochs, 10_000, 10, value.curve_constant("tau_epochs")),
        chance=0.1,
        weight=weight,
    )


def task(
    label: str,
    est: Estimate,
    accuracy: float,
    order: int,
    weight: float = 1.0,
    architecture: str = "seed_cnn",
) -> Task:
    spec = MemberSpec(
        name=label,
        architecture=architecture,
        hp={},
        preprocess=[],
        augment=[],
        training={"epochs": est.epochs, "batch_size": 128},
    )
    t = Task(spec, label, 0, training=dict(spec.training))
    t.order, t.estimate, t.worth = order, est, worth(accuracy, est.epochs, weight)
    t.probe_spec = {**PROBE, "architecture": architecture}
    return t


def done(val_accuracy: float, epochs: int, train_seconds: float) -> dict:
    return {
        "status": "done",
        "val_accuracy": val_accuracy,
        "epochs": epochs,
        "train_seconds": train_seconds,
    }


# ---- the plan by value ------------------------------------------------------------------------------


def test_a_cheap_accurate_member_is_kept_over_an_expensive_weak_one_whatever_the_profile_order():
    estimates = [
        Estimate(60, 0, 10),
        Estimate(10, 0, 10),
        Estimate(20, 0, 10),
    ]  # 600 s, 100 s, 200 s
    worths = [Worth(0.55, 0.1), Worth(0.80, 0.1), Worth(0.65, 0.1)]
    labels = ["resnet56 (weak, slow)", "lite0 features", "fastnet"]
    decisions = fit_to_budget(estimates, 350, 0.0, worths=worths, labels=labels)
    assert [d.action for d in decisions] == ["dropped", "run", "run"]
    assert [d.rank for d in decisions] == [3, 1, 2]
    assert decisions[0].note == (
        "expected 55% for ~10m00s, lower value than lite0 features, "
        "fastnet; ~50s of the budget left"
    )
    # Without values the old rule stands: profile order, the first one kept.
    assert [d.action for d in fit_to_budget(estimates, 350, 0.0)] == [
        "shortened",
        "shortened",
        "dropped",
    ]


def test_the_best_expected_member_goes_first_even_when_a_cheaper_one_is_denser():
    estimates = [Estimate(1, 0, 10), Estimate(30, 0, 10)]  # 10 s at 60%, 300 s at 85%
    decisions = fit_to_budget(estimates, 300, 0.0, worths=[Worth(0.60, 0.1), Worth(0.85, 0.1)])
    assert decisions[1].rank == 1 and decisions[1].action == "run"
    assert decisions[0].action == "dropped"
    # Near-equal expectations (within BEST_TIE) go by value per second instead.
    near = fit_to_budget(estimates, 300, 0.0, worths=[Worth(0.848, 0.1), Worth(0.85, 0.1)])
    assert near[0].rank == 1 and near[1].action == "shortened"


def test_shortening_keeps_the_most_epochs_that_fit_and_says_what_it_costs():
    est = Estimate(10, 5, 10)  # 105 s
    (d,) = fit_to_budget([est], 45, 0.0, worths=[worth(0.63, 10)])
    assert d.action == "shortened" and d.changes == {"epochs": 4} and d.estimate.seconds == 45
    assert d.note == "shortened to fit the budget: epochs 10 -> 4 (expected 50% instead of 63%)"
    assert d.expected == pytest.approx(value.curve(Reference(0.63, 10, 10_000), 4, 10_000, 10, 3.0))
    search = Estimate(1, 1, 4, trials=8, trial_epochs=2)  # 8 * (2 + 1) + 4 + 1 = 29 s
    (s,) = fit_to_budget([search], 15, 0.0)
    assert s.changes == {"trials": 3} and s.estimate.seconds <= 15  # trials go first


def test_a_boosting_round_is_never_spent_on_before_its_previous_round():
    spec = MemberSpec(
        name="b",
        architecture="seed_cnn",
        hp={},
        preprocess=[],
        augment=[],
        training={"epochs": 4, "batch_size": 32},
        boosting=2,
    )
    rounds = [
        Task(
            spec,
            f"b [boost {k}]",
            0,
            boost=Boost(k, 2),
            group="boosting:b",
            training={"epochs": 4, "batch_size": 32},
        )
        for k in range(2)
    ]
    for k, t in enumerate(rounds):
        t.order = k
    rounds[0].estimate, rounds[1].estimate = Estimate(50, 0, 4), Estimate(1, 0, 4)  # round 1: cheap
    rounds[0].worth, rounds[1].worth = Worth(0.6, 0.1), Worth(0.6, 0.1)
    ordered = plan.fit(rounds, 40)  # round 0 does not fit even at 1 epoch
    assert [t.label for t in ordered] == ["b [boost 0]", "b [boost 1]"]  # density says otherwise
    assert rounds[0].decision.action == "dropped" and rounds[1].decision.action == "dropped"
    assert rounds[1].decision.note == "needs b [boost 0], which does not run"


# ---- re-planning ------------------------------------------------------------------------------------


def test_a_first_task_twice_slower_than_its_probe_shortens_then_drops_the_lower_value_tasks(
    calibration,
):
    fastnet = task("fastnet", Estimate(25, 50, 10), 0.69, 0, architecture="fastnet")  # 300 s
    seed = task("seed_cnn [seed 1]", Estimate(20, 40, 8), 0.58, 1, weight=0.5)  # 200 s, a repeat
    resnet = task("resnet20", Estimate(30, 60, 8), 0.63, 2, architecture="resnet20")  # 300 s
    tasks = plan.fit([fastnet, seed, resnet], 1000)
    assert [t.label for t in tasks] == ["fastnet", "resnet20", "seed_cnn [seed 1]"]  # value order
    assert all(t.decision.action == "run" for t in tasks)
    replanner = Replanner(tasks, DATA, 1000)
    line = replanner.finished(0, 600.0, [done(0.70, 10, 550.0)], remaining=400.0)
    # 400 s left less the 10% reserve (100 s) at 1.9x: resnet20 fits 3 epochs
    assert line == (
        "re-planned: running 1.9x slower than the probes; resnet20 shortened to 3 "
        "epochs, seed_cnn [seed 1] dropped"
    )
    assert resnet.training["epochs"] == 3 and resnet.decision.changes == {"epochs": 3}
    # the lower-value one goes, though the profile lists it first
    assert seed.dropped and "lower value than resnet20" in seed.decision.note
    assert replanner.pace.factor == pytest.approx(630 / 330)
    # the shortened task's estimate at the new pace fits what was left (less the reserve)
    assert resnet.decision.estimate.seconds * replanner.pace.factor <= 400 - 100


def test_a_run_faster_than_planned_re_adds_what_it_dropped_and_an_on_plan_run_changes_nothing(
    calibration,
):
    def three():
        return plan.fit(
            [
                task("fastnet", Estimate(25, 50, 10), 0.69, 0, architecture="fastnet"),
                task("resnet20", Estimate(30, 60, 8), 0.63, 1, architecture="resnet20"),
                task("vgg11_bn", Estimate(380, 20, 1), 0.60, 2, architecture="vgg11_bn"),
            ],
            1000,
        )

    tasks = three()
    assert [t.decision.action for t in tasks] == ["run", "run", "dropped"]
    on_plan = Replanner(tasks, DATA, 1000)
    assert on_plan.finished(0, 300.0, [done(0.69, 10, 290.0)], remaining=700.0) == ""
    assert tasks[2].dropped
    tasks = three()
    fast = Replanner(tasks, DATA, 1000)
    line = fast.finished(0, 120.0, [done(0.69, 10, 110.0)], remaining=880.0)
    assert line == "re-planned: running 2.2x faster than the probes; vgg11_bn re-added"
    assert tasks[2].decision.action == "run" and tasks[2].training["epochs"] == 1


def test_members_kept_from_the_store_do_not_move_the_pace(calibration):
    tasks = plan.fit(
        [task("fastnet", Estimate(25, 50, 10), 0.69, 0), task("b", Estimate(1, 1, 1), 0.5, 1)], 1000
    )
    replanner = Replanner(tasks, DATA, 1000)
    assert replanner.finished(0, 0.2, [], remaining=999.0) == ""
    assert replanner.pace.factor == 1.0


# ---- noisy probes -----------------------------------------------------------------------------------


def fake_probes(monkeypatch, *timings: Timing) -> list[int]:
    """budget._time_model answering ``timings`` in turn; the list counts the probes taken."""
    calls: list[int] = []

    def timed(factory, shape, classes, batch, steps, windows):
        calls.append(windows)
        return timings[len(calls) - 1]

    monkeypatch.setattr(budget, "_time_model", timed)
    return calls


LOADED = Timing(100.0, 300.0, 0.5, Load(loadavg=3.9, others=0.55))
QUIET = Timing(200.0, 600.0, 0.5, Load(loadavg=0.3, others=0.02))


def probe():
    return budget.probe(lambda: None, (32, 32, 3), 10, 64, PROBE)


def test_a_probe_under_load_is_marked_and_measured_again_once_the_machine_is_quiet(
    calibration, monkeypatch
):
    calls = fake_probes(monkeypatch, LOADED, QUIET)
    first = probe()
    assert first.loaded and first.train == 100.0 and calls == [budget.PROBE_WINDOWS]
    entry = budget._read_calibration(calibration)[budget.calibration_key(PROBE)]
    assert entry["loaded"] is True and entry["loadavg"] == 3.9 and entry["others_cpu"] == 0.55
    budget.record_accuracy(PROBE, "recipe", {"val_accuracy": 0.7, "epochs": 10})
    monkeypatch.setattr(budget, "machine_quiet", lambda: True)
    again = probe()  # not trusted: measured again
    assert len(calls) == 2 and again.measured and not again.loaded and again.train == 200.0
    assert budget.observed_accuracy(PROBE, "recipe")["val_accuracy"] == 0.7  # kept across it
    trusted = probe()
    assert len(calls) == 2 and not trusted.measured and trusted.train == 200.0


def test_a_loaded_probe_stands_while_the_machine_is_still_busy(calibration, monkeypatch):
    calls = fake_probes(monkeypatch, LOADED)
    probe()
    monkeypatch.setattr(budget, "machine_quiet", lambda: False)
    stored = probe()
    assert len(calls) == 1 and stored.loaded and not stored.measured and stored.train == 100.0


def test_live_epochs_much_faster_than_a_loaded_probe_replace_it(calibration, monkeypatch):
    calls = fake_probes(monkeypatch, LOADED)
    probe()
    t = task(
        "fastnet", Estimate(10_000 / 100 + 2_000 / 300, 10, 10), 0.69, 0, architecture="fastnet"
    )
    t.probe_spec = PROBE
    tasks = plan.fit([t], None)
    assert not budget.observe_epochs(PROBE, 1.2)  # within the noise: the probe stands
    Replanner(tasks, DATA, None).finished(0, 700.0, [done(0.7, 10, 600.0)], remaining=float("inf"))
    entry = budget._read_calibration(calibration)[budget.calibration_key(PROBE)]
    speedup = (10_000 / 100 + 2_000 / 300) / 60.0  # 60 s an epoch against the probe's 106.7 s
    assert entry["source"] == "live" and entry["loaded"] is False
    assert entry["train"] == pytest.approx(100.0 * speedup) and entry["infer"] == pytest.approx(
        300 * speedup
    )
    monkeypatch.setattr(budget, "machine_quiet", lambda: True)
    now = probe()  # the live figure is trusted on a quiet machine: no new probe
    assert len(calls) == 1 and now.source == "live" and now.train == pytest.approx(100.0 * speedup)


def test_a_real_probe_taken_beside_another_job_is_marked(calibration, monkeypatch):
    """budget._time_model itself (a stand-in model, Keras only for clear_session): the others'
    share of the cores comes from /proc/stat-style counters, here faked at half the machine."""
    import os
    import time

    class Model:
        def compile(self, **kwargs):
            pass

        def train_on_batch(self, x, y):
            time.sleep(0.002)

        def predict_on_batch(self, x):
            time.sleep(0.001)

    cpus = os.cpu_count() or 1
    monkeypatch.setattr(
        budget,
        "_cpu_counters",
        lambda: ((0.2 + 0.5 * cpus) * time.perf_counter(), 0.2 * time.perf_counter()),
    )
    monkeypatch.setattr(budget, "_loadavg", lambda: 3.0)
    t = budget.probe(Model, (8, 8, 3), 10, 4, PROBE)
    entry = budget._read_calibration(calibration)[budget.calibration_key(PROBE)]
    assert t.loaded and t.measured and entry["loaded"] is True and entry["loadavg"] == 3.0
    assert entry["others_cpu"] == pytest.approx(0.5, abs=0.01) and 0 < t.train < 4 / 0.002


def test_calibration_entries_from_before_the_load_mark_still_read(calibration, monkeypatch):
    key = budget.calibration_key(PROBE)
    budget.atomic.write_json(
        calibration,
        {
            key: {"train": 150.0, "infer": 450.0, "build": 0.2, "spec": PROBE, "measured_at": 1.0},
            "cpu2-test-broken": {"train": "fast"},
        },
    )
    calls = fake_probes(monkeypatch, QUIET)
    old = probe()
    assert calls == [] and (old.train, old.infer, old.build_seconds) == (150.0, 450.0, 0.2)
    assert not old.loaded and old.source == "probe" and not old.measured
    assert budget.observed_accuracy(PROBE, "recipe") is None


def test_the_fastest_window_counts_and_load_is_read_from_the_others_share(monkeypatch):
    ticks = iter([0.0, 1.0, 1.0, 1.2, 1.2, 1.5])  # a slow first window (another job), two quick
    assert budget.best_rate(lambda: None, 64, 2, 3, clock=lambda: next(ticks)) == pytest.approx(640)
    assert budget.others_share((100.0, 10.0), (101.5, 11.0), wall=1.0, cpus=2) == 0.25
    assert budget.others_share(None, (1.0, 1.0), wall=1.0) is None
    assert Load(others=0.3).loaded and not Load(loadavg=9.0, others=0.1).loaded
    monkeypatch.setattr(budget.os, "cpu_count", lambda: 2)
    assert Load(loadavg=3.5).loaded and not Load(loadavg=1.5).loaded and not Load().loaded


# ---- expected accuracy --------------------------------------------------------------------------------


def test_an_earlier_runs_accuracy_replaces_the_prior(calibration, monkeypatch):
    monkeypatch.setattr(value, "prior", lambda *a, **k: Reference(0.55, 8, 10_000))
    t = task("fastnet", Estimate(25, 50, 10), 0.69, 0, architecture="fastnet")
    tau = value.curve_constant("tau_epochs")
    prior = value.curve(Reference(0.55, 8, 10_000), 10, 10_000, 10, tau)
    assert value.expected_accuracy(t, DATA) == (prior, "guess") and 0.55 < prior < 0.57
    Replanner(plan.fit([t], None), DATA, None).finished(
        0, 300.0, [done(0.74, 10, 290.0)], float("inf")
    )
    acc, source = value.expected_accuracy(t, DATA)
    assert source == "here" and acc == pytest.approx(0.74)
    shorter, _ = value.expected_accuracy(t, DATA, Estimate(25, 50, 3))
    assert shorter < 0.74
    (w,) = value.worths([t], DATA)
    assert w.source == "here" and w.expected(Estimate(25, 50, 10)) == pytest.approx(0.74)


def test_a_plugin_prior_reads_its_registration_then_its_family_then_its_kind(monkeypatch):
    import zoo

    entries = {
        "plug_a": SimpleNamespace(
            family="plug", kind="pretrained", extra={"reference_accuracy": (0.80, 20, 10_000)}
        ),
        "plug_c": SimpleNamespace(
            family="plug", kind="pretrained", extra={"reference_accuracy": (0.82, 20, 10_000)}
        ),
        "plug_b": SimpleNamespace(family="plug", kind="pretrained", extra={}),
        "mystery_net": SimpleNamespace(family="mystery", kind="scratch", extra={}),
    }

    def get(name):
        if name not in entries:
            raise zoo.ZooError(name)
        return entries[name]

    monkeypatch.setattr(zoo, "get", get)
    monkeypatch.setattr(
        zoo,
        "list_models",
        lambda family=None: [n for n, e in entries.items() if e.family == family],
    )
    declared = value.prior("plug_a")
    assert (declared.accuracy, declared.epochs, declared.train_images) == (0.80, 20, 10_000)
    assert declared.basis == "declared"
    family = value.prior("plug_b")
    assert family.accuracy == pytest.approx(0.81) and family.basis == "guess"
    assert "plug_a, plug_c" in family.source
    assert value.prior("mystery_net") == value.default_reference("scratch")
    assert value.prior("mystery_net").basis == "guess"
    assert value.prior("member:runs/a/members/x") == value.default_reference("pretrained")
    # the curve: the reference point itself, fewer epochs less, more images more, 100 classes lower
    lite = value.prior("plug_a")
    assert value.curve(lite, 20, 10_000, 10, 2.0) == pytest.approx(0.80)
    assert (
        value.curve(lite, 2, 10_000, 10, 2.0) < 0.6 < value.curve(lite, 20, 45_000, 10, 2.0) - 0.2
    )
    assert 0.2 < value.curve(lite, 20, 100, 10, 2.0) < 0.5  # a tiny set: lower, still above chance
    assert value.curve(lite, 20, 10_000, 100, 2.0) == pytest.approx(0.01 + 0.99 * (0.70 / 0.90))


def test_plan_shows_the_expected_accuracy_its_source_and_the_value_order():
    tasks = plan.fit(
        [
            task("resnet56", Estimate(60, 0, 10), 0.55, 0),
            task("lite0", Estimate(10, 0, 10), 0.80, 1),
        ],
        150,
    )
    tasks[1].worth = Worth(tasks[1].worth.accuracy, 0.1, source="here", detail="here: a run")
    lines = plan.describe(tasks, 150)
    assert lines[0].startswith("  1. lite0") and " 80.0% guess     #1" in lines[0]
    assert " 55.0% here      #2" in lines[1]
    assert (
        "dropped (expected 55% for ~10m00s, lower value than lite0; ~35s of the budget left)"
        in lines[1]
    )
    assert "value order" in lines[-2] and lines[-1] == "       resnet56: here: a run"
    tasks[0].probed_under_load = True
    assert (
        "1 of 2 estimates come from probes taken while other processes used the cores"
        in "\n".join(plan.describe(tasks, 150))
    )
