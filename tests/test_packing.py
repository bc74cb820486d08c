"""The plan packed into a cluster's parallel slots (benchmark.plan.packing), the budget as wall
time, and `--ray` refusing an address nobody answers at. Needs no Ray."""

from __future__ import annotations

import socket

from test_planner import task

from benchmark.cli.app import main
from benchmark.config.profiles import MemberSpec
from benchmark.plan import packing
from benchmark.plan import tasks as plan
from benchmark.plan.budget import Estimate, Worth
from benchmark.plan.tasks import Boost, Task


def boosted(rounds: int, seconds: float) -> list[Task]:
    spec = MemberSpec(
        name="b",
        architecture="seed_cnn",
        hp={},
        preprocess=[],
        augment=[],
        training={"epochs": 1, "batch_size": 32},
        boosting=rounds,
    )
    out = []
    for k in range(rounds):
        t = Task(
            spec,
            f"b [boost {k}]",
            0,
            boost=Boost(round=k, rounds=rounds),
            group="boosting:b",
            training={"epochs": 1, "batch_size": 32},
        )
        t.order, t.estimate, t.worth = 10 + k, Estimate(seconds, 0, 1), Worth(0.5, 0.1)
        out.append(t)
    return out


def test_boosting_rounds_share_one_slot_in_order_and_seeds_spread_over_the_others():
    seeds = [task(f"s [seed {k}]", Estimate(100, 0, 1), 0.6, k) for k in range(3)]
    rounds = boosted(3, 50)
    tasks = plan.fit([*reversed(rounds), *seeds], None)
    packed = packing.pack(tasks, 2)
    chain = [j for j in packed.jobs if len(j.tasks) > 1]
    assert len(chain) == 1 and [t.label for t in chain[0].tasks] == [
        "b [boost 0]",
        "b [boost 1]",
        "b [boost 2]",
    ]
    assert chain[0].seconds == 150
    # 3 x 100 s of seeds and a 150 s chain on two slots: 250 s of wall time, not 450 s
    assert packed.serial == 450 and packed.makespan == 250
    assert {j.slot for j in packed.jobs if len(j.tasks) == 1} == {0, 1}
    text = "\n".join(packed.describe())
    assert "packing on 2 parallel slots" in text and "b [3 boosting rounds]" in text
    assert "~4m10s on 2 slots, ~7m30s on one (1.8x)" in text


def test_on_four_slots_the_budget_is_wall_time_and_on_one_it_is_the_sum():
    def four():
        return [task(f"m{k}", Estimate(100, 0, 1), 0.6 - k / 100, k) for k in range(4)]

    alone = plan.fit(four(), 250)
    assert sum(not t.dropped for t in alone) == 2  # 225 s after the reserve: two of 100 s
    together = plan.fit(four(), 250, slots=4)
    assert all(not t.dropped for t in together)  # four slots run all four in 100 s
    assert packing.pack(together, 4).makespan <= 250 * 0.9
    # two slots: the work would fit in 2 x 225 s, but the packing's wall time decides
    two = plan.fit(four(), 150, slots=2)
    kept = [t for t in two if not t.dropped]
    assert packing.pack(two, 2).makespan <= 150 * 0.9 and len(kept) == 2
    lines = plan.describe(two, 150, slots=2)
    assert any("packing on 2 parallel slots" in line for line in lines)


def test_a_ray_address_nobody_answers_at_is_one_line_and_exit_2(capsys, tmp_path):
    with socket.socket() as s:  # a port that was free a moment ago: nobody listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = main(["run", "smoke", "--out", str(tmp_path / "r"), "--ray", f"127.0.0.1:{port}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert f"--ray 127.0.0.1:{port}: no Ray cluster answers there" in err[0]
    assert not (tmp_path / "r").exists()
    assert main(["run", "smoke", "--out", str(tmp_path / "r"), "--ray", "nohost"]) == 2
    assert "not a cluster address" in capsys.readouterr().err


def test_ray_refuses_a_strategy_in_one_line_before_starting_anything(capsys, tmp_path):
    out = ["--out", str(tmp_path / "r")]
    assert main(["run", "smoke", *out, "--ray", "local", "--strategy", "mirrored"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--ray: not with --strategy mirrored" in err[0]
    assert not (tmp_path / "r").exists()


def test_without_the_extras_ray_and_mlflow_say_which_install_they_need(
    capsys, tmp_path, monkeypatch
):
    """The default install has neither: each option is one line naming its extra, exit 2."""
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # None in sys.modules: the import fails
    monkeypatch.setitem(sys.modules, "mlflow", None)
    out = ["--out", str(tmp_path / "r")]
    assert main(["run", "smoke", *out, "--ray", "local"]) == 2
    assert "pip install 'zoobench[ray]'" in capsys.readouterr().err
    assert main(["run", "smoke", *out, "--mlflow", "sqlite:///x.db"]) == 2
    assert "pip install 'zoobench[mlflow]'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
