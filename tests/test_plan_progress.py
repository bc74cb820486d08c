"""The run's overall progress line: share of the plan done, ETA at the pace so far, how far off."""

from __future__ import annotations

from benchmark.config.profiles import MemberSpec
from benchmark.plan.budget import Decision, Estimate
from benchmark.plan.tasks import Task, progress_note

SPEC = MemberSpec(
    name="m", architecture="seed_cnn", hp={}, training={"epochs": 1}, preprocess=[], augment=[]
)


def task(seconds: float, action: str = "run", note: str = "") -> Task:
    t = Task(SPEC, f"task {seconds}", 0, training={"epochs": 1})
    t.decision = Decision(action, Estimate(seconds, 0.0, 1))
    t.note = note
    return t


def test_on_plan_slower_and_faster_runs_get_their_eta_from_the_pace_so_far():
    tasks = [task(100), task(100), task(200)]
    assert progress_note(tasks, 0, 5.0) == "plan 0% done, ETA ~6m40s"
    assert progress_note(tasks, 1, 102.0) == "plan 25% done, ETA ~5m06s (on plan)"
    # The first two took 300 s where the plan said 200: the 200 s left will take 300 s.
    assert progress_note(tasks, 2, 300.0) == "plan 50% done, ETA ~5m00s (50% slower than planned)"
    assert progress_note(tasks, 2, 100.0) == "plan 50% done, ETA ~1m40s (50% faster than planned)"


def test_dropped_and_unestimated_tasks_are_not_in_the_plan_and_no_estimates_say_nothing():
    tasks = [task(100), task(500, action="dropped"), task(0, note="weights unavailable"), task(100)]
    assert progress_note(tasks, 3, 200.0) == "plan 50% done, ETA ~3m20s (100% slower than planned)"
    unplanned = [Task(SPEC, "a", 0), Task(SPEC, "b", 0)]
    assert progress_note(unplanned, 1, 50.0) == ""
