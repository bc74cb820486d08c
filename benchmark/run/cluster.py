"""A benchmark's members on a Ray cluster (``zoobench run PROFILE --ray ADDRESS``).

The driver (the ``zoobench run`` process) holds the run lock, plans, and submits the plan's jobs as
Ray tasks, each asking for what one member needs (a GPU where the cluster has them, else its CPUs;
memory from the data it holds). A job is one member, one search, or a boosting group's rounds in
round order (round k's weights come from rounds 0..k-1); seed and bagging groups are one job a
member, so they run side by side. With ``search_workers`` a search is Keras Tuner's own chief and
workers, each a Ray task in processes of its own (:func:`_submit_search`).

Where results go: into the run store, on a filesystem every node mounts at the same path (the
``--out`` folder). A worker writes its member exactly as the plain runner does (atomic files,
``metrics.json`` last with every file's hash), and the driver reads the store afterwards. Going
through the store rather than Ray's object store keeps one source of truth: a run started on a
cluster resumes with a plain ``zoobench run`` (and the other way round), the checksums decide what
is kept, and nothing a member writes has to fit in the driver's memory. The data arrays go the
other way, once, through Ray's object store, so workers need the same zoobench install but not
the dataset.

Faults: a worker process killed mid-member fails its Ray task, which Ray runs again
(``RETRIES``); the retry finds the member's folder incomplete (no ``metrics.json``), discards it
and trains the member again. A job that still fails is reported and left to a resume. A lost driver
takes its tasks with it (Ray ends a job's tasks with its driver); the folder it leaves is a run
folder like any interrupted one: ``zoobench run`` with or without ``--ray`` keeps every finished
member and redoes the rest.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from benchmark.errors import ZoobenchError, short_error
from benchmark.plan import packing

log = logging.getLogger(__name__)

LOCAL = "local"
RETRIES = 2  # times Ray runs a job again after its worker process died
CONNECT_TIMEOUT = 5.0  # seconds to wait for the head's port before saying nobody is there
MEMORY_OVERHEAD = (
    1.5 * 2**30
)  # bytes one worker needs besides its data: Python, the backend, a model
INSTALL = "pip install 'zoobench[ray]'"


@dataclass
class Cluster:
    """The Ray cluster this run uses, and how its tasks are sized."""

    address: str
    cpus: float
    gpus: float
    memory: float  # bytes, the largest node's
    task_cpus: int = 1
    started_here: bool = False
    search_workers: int = 0  # >0: a search's trials run on this many Ray workers (its own chief)

    @property
    def slots(self) -> int:
        """Members that run at once: one a GPU where there are GPUs, else one a ``task_cpus``."""
        if self.gpus >= 1:
            return int(self.gpus)
        return max(1, int(self.cpus // self.task_cpus))

    def describe(self) -> str:
        gpus = f", {self.gpus:g} GPUs" if self.gpus else ""
        searches = f", each search on {self.search_workers} workers" if self.search_workers else ""
        return (
            f"Ray cluster {self.address}: {self.cpus:g} CPUs{gpus}, {self.slots} parallel slots "
            f"({'1 GPU' if self.gpus >= 1 else f'{self.task_cpus} CPU'} a member){searches}"
        )

    def shutdown(self) -> None:
        import ray

        ray.shutdown()


def _import_ray():
    try:
        import ray
    except ImportError as exc:
        raise ZoobenchError(f"--ray needs Ray, which is not installed ({INSTALL})") from exc
    return ray


def check_address(address: str) -> tuple[str, int] | None:
    """``host:port`` of a cluster's head (None for ``local`` and ``auto``); a ZoobenchError naming
    ``--ray`` when the address is malformed or nothing listens there (Ray itself would retry for
    a minute or more before saying so)."""
    if address in (LOCAL, "auto"):
        return None
    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ZoobenchError(
            f"--ray {address}: not a cluster address (HOST:PORT of `ray start --head`, "
            f"'auto' for the cluster this machine joined, or '{LOCAL}')"
        )
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT):
            pass
    except OSError as exc:
        raise ZoobenchError(
            f"--ray {address}: no Ray cluster answers there ({exc.strerror or exc}); start one with "
            f"`ray start --head` or use --ray {LOCAL}"
        ) from exc
    return host, int(port)


def connect(
    address: str, *, cpus: int | None = None, task_cpus: int = 1, search_workers: int = 0
) -> Cluster:
    """Join the cluster at ``address`` (``local``: start a Ray instance on this machine with
    ``cpus`` CPUs, all of them by default); a ZoobenchError when that cannot be done.
    ``search_workers`` > 0 spreads each search's trials over that many Ray workers."""
    if task_cpus < 1:
        raise ZoobenchError(f"--ray-task-cpus: must be 1 or more, got {task_cpus}")
    if search_workers < 0:
        raise ZoobenchError(f"--ray-search-workers: must be 0 or more, got {search_workers}")
    check_address(address)
    ray = _import_ray()
    kwargs = {"log_to_driver": False, "configure_logging": False}
    try:
        if address == LOCAL:
            ray.init(num_cpus=cpus, include_dashboard=False, **kwargs)
        else:
            ray.init(address=address, **kwargs)
    except Exception as exc:  # noqa: BLE001 - Ray raises many kinds; the user needs one line
        raise ZoobenchError(
            f"--ray {address}: could not join the cluster ({short_error(exc)})"
        ) from exc
    resources = ray.cluster_resources()
    memory = max(
        (float(n["Resources"].get("memory", 0)) for n in ray.nodes() if n.get("Alive")),
        default=float(resources.get("memory", 0)),
    )
    return Cluster(
        address=address,
        cpus=float(resources.get("CPU", 0)),
        gpus=float(resources.get("GPU", 0)),
        memory=memory,
        task_cpus=task_cpus,
        started_here=address == LOCAL,
        search_workers=search_workers,
    )


def memory_bytes(job: packing.Job, data, cluster: Cluster) -> int:
    """Memory to ask for a job: its copy of the data at the member's input size, as uint8 and as
    one float32 batch pipeline's worth of it, plus the process; at most what one slot of the
    largest node holds, so a request never makes a job unschedulable."""
    size = 0
    for task in job.tasks:
        side = task.spec.input_size or data.input_shape[0]
        n = len(data.y_train) + len(data.y_val) + len(data.y_test)
        size = max(size, n * side * side * data.input_shape[2])
    wanted = 3 * size + MEMORY_OVERHEAD
    per_slot = cluster.memory / max(cluster.slots, 1) if cluster.memory else wanted
    return int(min(wanted, per_slot))


def run_jobs(
    runner,
    tasks: list,
    cluster: Cluster,
    progress: Callable[[str], None],
) -> list[dict]:
    """Run the plan's kept tasks on ``cluster`` into ``runner``'s store; returns the outcomes
    (``benchmark.run.members.MemberOutcome`` as dicts) of every job that finished."""
    import ray

    import zoo.backend

    jobs = packing.jobs(tasks)
    if not jobs:
        return []
    deadline = None if runner.budget_seconds is None else time.time() + runner.clock.remaining
    settings = {
        "root": str(runner.store.root.resolve()),
        "seed": runner.seed,
        "deterministic": bool(runner.profile.deterministic),
        "tensorboard": runner.tensorboard,
        "deadline": deadline,
        "threads": cluster.task_cpus,
    }
    data_ref = ray.put(runner.data)
    remote = ray.remote(_job)
    env = {"KERAS_BACKEND": zoo.backend.name()}

    def submit(job: packing.Job, name: str, role: str | None = None, **options):
        request = {
            "num_cpus": cluster.task_cpus,
            "num_gpus": 1 if cluster.gpus >= 1 else 0,
            "memory": memory_bytes(job, runner.data, cluster),
            "max_retries": RETRIES,
            "retry_exceptions": False,
            "runtime_env": {"env_vars": env},
            **options,
        }
        return remote.options(name=name[:120], **request).remote(
            settings, data_ref, job.tasks, role
        )

    pending: dict = {}  # ref -> (job, counted): a search's workers are not jobs of their own
    for job in jobs:
        if job.tasks[0].tuned and cluster.search_workers > 0:
            chief, workers = _submit_search(job, cluster, env, submit)
            pending[chief] = (job, True)
            pending.update({ref: (job, False) for ref in workers})
        else:
            pending[submit(job, f"zoobench {job.label}")] = (job, True)
    progress(f"cluster: {len(jobs)} jobs submitted to {cluster.slots} slots")
    outcomes: list[dict] = []
    done = 0
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        job, counted = pending.pop(ready[0])
        done += counted
        head = (
            f"[{done}/{len(jobs)}] {job.label}" if counted else f"    {job.label} (search worker)"
        )
        try:
            result = ray.get(ready[0])
        except ray.exceptions.RayTaskError as exc:
            cause = exc.as_instanceof_cause()
            if isinstance(cause, ZoobenchError):  # the user's input: the run ends, as without Ray
                _cancel(ray, pending)
                raise ZoobenchError(str(cause).splitlines()[-1]) from exc
            progress(f"{head}: FAILED ({short_error(exc)}); a rerun redoes it")
            continue
        except Exception as exc:  # noqa: BLE001 - a worker lost past its retries, a node gone
            progress(f"{head}: lost ({short_error(exc)}); a rerun redoes it")
            continue
        progress(f"{head}: finished on a worker")
        for line in result["lines"]:
            progress(line)
        outcomes += result["outcomes"]
    return outcomes


def _submit_search(job: packing.Job, cluster: Cluster, env: dict, submit) -> tuple:
    """A search as Keras Tuner's own chief and workers, each a Ray task in worker processes of its
    own (Keras Tuner reads its role from process-wide ``KERASTUNER_*`` variables, which a Ray
    ``runtime_env`` sets for just those processes). The chief runs on the driver's node, asks for
    no CPU (it serves the oracle, then stores the best trials as members) and demands a new token
    (``ZOOBENCH_TOKEN``, benchmark.train.distributed) of the workers, which run the trials."""
    import secrets

    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from benchmark.train import distributed

    ip = ray.util.get_node_ip_address()
    oracle = {
        distributed.ENV_IP: ip,
        distributed.ENV_PORT: str(_free_port(ip)),
        distributed.ENV_TOKEN: secrets.token_urlsafe(24),
    }
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    chief = submit(
        job,
        f"zoobench {job.label} [search chief]",
        "chief",
        num_cpus=0,
        num_gpus=0,
        max_retries=0,  # a restarted chief would wait for workers that have finished
        scheduling_strategy=here,
        runtime_env={"env_vars": {**env, **oracle, distributed.ENV_ID: "chief"}},
    )
    workers = [
        submit(
            job,
            f"zoobench {job.label} [search worker {k}]",
            "worker",
            runtime_env={"env_vars": {**env, **oracle, distributed.ENV_ID: f"ray-worker-{k}"}},
        )
        for k in range(cluster.search_workers)
    ]
    return chief, workers


def _free_port(host: str) -> int:
    """A port free on ``host`` now (the chief binds it a moment later, on the same node)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _cancel(ray, pending: dict) -> None:
    for ref in pending:
        try:
            ray.cancel(ref, force=True)
        except Exception as exc:  # noqa: BLE001 - best effort: the driver is ending anyway
            log.debug("could not cancel a job: %s", exc)


def _job(settings: dict, data, tasks: list, role: str | None = None) -> dict:
    """On a worker: train ``tasks`` (in order) into the run store at ``settings["root"]``, as the
    plain runner does; returns the outcomes and the progress lines for the driver to print.
    ``role``: "chief" or "worker" of a search spread over Ray workers (:func:`_submit_search`)."""
    import keras

    from benchmark.plan import budget as budget_mod
    from benchmark.run.members import MemberTrainer
    from benchmark.run.searches import run_search
    from benchmark.store.runstore import RunStore
    from zoo import backend

    if settings["deterministic"]:
        backend.enable_determinism()
    else:  # fewer threads change the order of float sums: a deterministic run keeps the default
        _limit_threads(int(settings["threads"]))
    keras.utils.set_random_seed(settings["seed"])
    deadline = settings["deadline"]
    lines: list[str] = []
    left = None if deadline is None else max(0.0, deadline - time.time())
    clock = budget_mod.Clock(left)
    trainer = MemberTrainer(
        RunStore(settings["root"]),
        data,
        seed=settings["seed"],
        clock=clock,
        progress=lines.append,
        tensorboard=settings["tensorboard"],
    )
    if role == "worker":  # a search worker's progress: the trials it ran
        _collect_trials(lines)
    for task in tasks:
        if clock.expired:
            lines.append(f"    budget reached: {task.label} not started")
            continue
        if task.tuned:
            run_search(trainer, task, role, settings["seed"])
        else:
            trainer.run(task)
    return {"outcomes": [dataclasses.asdict(o) for o in trainer.outcomes], "lines": lines}


def _collect_trials(lines: list[str]) -> None:
    """Keep the search's "trial N started by ID" log lines in ``lines`` (for the driver to print).
    The process is this search's own (its runtime_env), so the handler goes with it."""
    search_log = logging.getLogger("benchmark.tune.tuning")

    class Lines(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            message = record.getMessage()
            if "started by" in message:
                lines.append("    " + message.split(":")[0])

    for old in [h for h in search_log.handlers if type(h).__name__ == "Lines"]:
        search_log.removeHandler(old)  # an earlier job's, in a reused process
    search_log.addHandler(Lines(logging.INFO))
    search_log.setLevel(logging.INFO)


def _limit_threads(threads: int) -> None:
    """A member uses the CPUs its task asked for, not every core of the node (TensorFlow's pools
    are set once a process: a reused worker keeps its first setting). Not with ``deterministic =
    true``: another thread count sums floats in another order, and a member's numbers (a boosting
    round's ID, through its weights) would differ from a plain run's in the last bits."""
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    if os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow":
        return
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(max(1, math.ceil(threads / 2)))
    except RuntimeError:  # already initialised by an earlier job of this worker process
        pass
