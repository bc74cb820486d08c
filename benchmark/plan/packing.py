"""The plan packed into parallel slots: which task runs where and when, and the run's wall time.

On a Ray cluster (``zoobench run --ray``) the plan's tasks run side by side, one per slot (a slot is
what one task asks for: a GPU, or its CPUs). The budget is the wall time of the whole run, so the
planner fits the tasks to ``slots x budget`` seconds of work and then checks the packing's wall time
(its makespan) against the budget. Boosting rounds are one chain in one slot, in round order (round
k's weights come from rounds 0..k-1); seed and bagging groups spread over the slots like any task.

The packing is list scheduling in run order (value order): each job goes to the slot that frees
first, which is what Ray's scheduler does with jobs submitted in that order and equal requests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from benchmark.formatting import duration


@dataclass
class Job:
    """What one slot runs without a break: one task, or a boosting group's rounds in order."""

    tasks: list  # benchmark.plan.tasks.Task, in the order they run
    seconds: float = 0.0
    slot: int = 0
    start: float = 0.0

    @property
    def end(self) -> float:
        return self.start + self.seconds

    @property
    def label(self) -> str:
        if len(self.tasks) == 1:
            return self.tasks[0].label
        return f"{self.tasks[0].spec.name} [{len(self.tasks)} boosting rounds]"


@dataclass
class Packing:
    """The jobs with their slot and estimated start; ``makespan`` is the run's estimated wall time."""

    slots: int
    jobs: list[Job] = field(default_factory=list)

    @property
    def makespan(self) -> float:
        return max((j.end for j in self.jobs), default=0.0)

    @property
    def serial(self) -> float:
        """The same jobs one after another: what one slot would take."""
        return sum(j.seconds for j in self.jobs)

    def describe(self) -> list[str]:
        """The packing as ``--plan`` prints it: one line a slot, then the wall time it gives."""
        lines = [f"     packing on {self.slots} parallel slots (one task a slot, in run order):"]
        for s in range(self.slots):
            mine = [j for j in self.jobs if j.slot == s]
            if not mine:
                lines.append(f"       slot {s + 1}: idle")
                continue
            names = ", ".join(j.label for j in mine)
            lines.append(f"       slot {s + 1}: ~{duration(mine[-1].end)}  {names}")
        if self.jobs:
            speedup = self.serial / self.makespan if self.makespan > 0 else 1.0
            lines.append(
                f"     estimated wall time ~{duration(self.makespan)} on {self.slots} slots, "
                f"~{duration(self.serial)} on one ({speedup:.1f}x)"
            )
        return lines


def jobs(tasks: Sequence) -> list[Job]:
    """The kept tasks as jobs, in run order: a boosting group's rounds become one job (placed where
    its first round is); every other task is a job of its own. Dropped tasks are left out."""
    out: list[Job] = []
    chains: dict[str, Job] = {}
    for task in tasks:
        if task.dropped:
            continue
        if task.boost is not None:
            job = chains.get(str(task.group))
            if job is None:
                job = chains[str(task.group)] = Job([])
                out.append(job)
            job.tasks.append(task)
        else:
            out.append(Job([task]))
    for job in out:
        job.tasks.sort(key=lambda t: t.boost.round if t.boost is not None else 0)
    return out


def task_seconds(task) -> float:
    """The task's estimated seconds as decided (0 when it was not costed)."""
    if task.decision is None or task.note:
        return 0.0
    return float(task.decision.estimate.seconds)


def pack(tasks: Sequence, slots: int) -> Packing:
    """List-schedule ``tasks``' jobs on ``slots`` slots: each to the slot that frees first."""
    slots = max(1, int(slots))
    free = [0.0] * slots
    packing = Packing(slots)
    for job in jobs(tasks):
        job.seconds = sum(task_seconds(t) for t in job.tasks)
        job.slot = min(range(slots), key=lambda s: (free[s], s))
        job.start = free[job.slot]
        free[job.slot] = job.end
        packing.jobs.append(job)
    return packing
