"""Benchmark profiles: TOML files saying what to train, tune and ensemble, checked before anything runs.

A profile is a shipped name (``benchmark/profiles/<name>.toml``: smoke, cpu-quick, standard, full)
or a path to the user's own file. Mistakes fail at once with the file and the key named, not an
hour into a run. The format is documented in README "## Profiles".
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import tomllib

from benchmark.augment import validate_policy
from benchmark.budget import parse_duration
from benchmark.errors import ZoobenchError
from benchmark.preprocess import validate_steps
from benchmark.training import resolve_training
from benchmark.transfer import DEFAULT_OPTIONS as TRANSFER_OPTIONS
from benchmark.transfer import STRATEGIES
from benchmark.transfer import validate_options as validate_transfer

DEFAULT_PROFILE = "cpu-quick"
ALGORITHMS = ("random", "grid", "bayesian", "hyperband")
TOP_KEYS = {"name", "description", "seed", "budget", "deterministic", "data", "training", "tuner",
            "members", "ensembles", "report"}  # fmt: skip
DATA_KEYS = {"dataset", "data_dir", "val_fraction", "train_size", "val_size", "test_size"}
TUNER_DEFAULTS: dict[str, Any] = {
    "algorithm": "random",
    "max_trials": 4,
    "epochs": 2,  # per trial (Hyperband: the most epochs of a trial)
    "top_k": 1,  # the best k trials become members
    "restore": True,  # True: the trial's model is the member; False: retrain with the member's epochs
    "hyperband_factor": 3,
    "search": {},
}
SEARCHABLE = {"learning_rate", "optimizer", "label_smoothing", "weight_decay", "schedule",
              "batch_size", "momentum", "augment"}  # fmt: skip
MEMBER_KEYS = {"architecture", "name", "hp", "training", "preprocess", "augment", "strategy",
               "input_size", "tune", "seeds", "bagging", "transfer"}  # fmt: skip


@dataclass
class MemberSpec:
    """One ``[[members]]`` entry with the profile's defaults applied."""

    name: str
    architecture: str
    hp: dict[str, Any]
    training: dict[str, Any]
    preprocess: list[dict[str, Any]]
    augment: list[dict[str, Any]]
    strategy: str | None = None
    input_size: int | None = None
    tune: dict[str, Any] | None = None  # resolved tuner settings when the member is tuned
    seeds: int = 1
    bagging: int = 0
    transfer: dict[str, Any] = field(default_factory=dict)  # options of benchmark.transfer


@dataclass
class Profile:
    """A validated profile."""

    name: str
    source: str  # the file it came from
    description: str
    seed: int
    budget_seconds: float | None
    deterministic: bool
    data: dict[str, Any]
    members: list[MemberSpec]
    ensembles: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def ensembles_enabled(self) -> bool:
        return bool(self.ensembles.get("enabled", True))

    @property
    def report_enabled(self) -> bool:
        return bool(self.report.get("enabled", True))

    def to_json(self) -> dict[str, Any]:
        """What run.json records: the name, the file and the profile as written."""
        return {"name": self.name, "source": self.source, **copy.deepcopy(self.raw)}


def shipped_profiles() -> list[str]:
    folder = resources.files("benchmark") / "profiles"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def load_profile(
    name_or_path: str | Path | None = None, *, check_architectures: bool = True
) -> Profile:
    """Read and validate a shipped profile (by name) or a TOML file (by path)."""
    name_or_path = str(name_or_path or DEFAULT_PROFILE)
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.is_file():
        if not path.is_file():
            raise ZoobenchError(f"profile file {path} does not exist")
        text, source = path.read_text(encoding="utf-8"), str(path)
    else:
        resource = resources.files("benchmark") / "profiles" / f"{name_or_path}.toml"
        if not resource.is_file():
            shipped = ", ".join(shipped_profiles())
            raise ZoobenchError(
                f"unknown profile {name_or_path!r}: shipped are {shipped}, or give a .toml path"
            )
        text, source = resource.read_text(encoding="utf-8"), f"{name_or_path} ({resource})"
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ZoobenchError(f"profile {source}: not valid TOML: {exc}") from None
    return parse_profile(
        raw, source, default_name=path.stem, check_architectures=check_architectures
    )


def parse_profile(raw: dict[str, Any], source: str, default_name: str = "profile", *,
                  check_architectures: bool = True) -> Profile:  # fmt: skip
    """Validate a profile's TOML data; every error names ``source`` and the key."""

    def fail(key: str, message: str) -> ZoobenchError:
        return ZoobenchError(f"profile {source}: {key}: {message}")

    _unknown(raw, TOP_KEYS, "", fail)
    seed = raw.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise fail("seed", f"must be an integer, got {seed!r}")
    try:
        budget = parse_duration(raw.get("budget"), option="budget")
    except ZoobenchError as exc:
        raise fail("budget", str(exc).split(": ", 1)[-1]) from None
    data = dict(raw.get("data", {}))
    _unknown(data, DATA_KEYS, "data.", fail)
    data.setdefault("dataset", "cifar10")
    for key in ("train_size", "val_size", "test_size"):
        if data.get(key) is not None and (not isinstance(data[key], int) or data[key] < 1):
            raise fail(f"data.{key}", f"must be a positive integer, got {data[key]!r}")

    base_training = dict(raw.get("training", {}))
    base_augment = base_training.pop("augment", [])
    base_preprocess = base_training.pop("preprocess", [])
    try:
        resolve_training(base_training, where="training")
    except ZoobenchError as exc:
        raise ZoobenchError(f"profile {source}: {exc}") from None
    tuner = dict(TUNER_DEFAULTS, **raw.get("tuner", {}))
    _check_tuner(tuner, "tuner", fail)

    members_raw = raw.get("members", [])
    if not isinstance(members_raw, list) or not members_raw:
        raise fail("members", "a profile needs at least one [[members]] entry")
    members = []
    for i, m in enumerate(members_raw):
        where = f"members[{i}]"
        if not isinstance(m, dict):
            raise fail(where, "must be a table")
        _unknown(m, MEMBER_KEYS, f"{where}.", fail)
        arch = m.get("architecture")
        if not isinstance(arch, str) or not arch:
            raise fail(f"{where}.architecture", "is required (a zoo architecture name)")
        if check_architectures:
            import zoo

            try:
                entry = zoo.get(arch)
            except zoo.ZooError as exc:
                raise fail(f"{where}.architecture", str(exc)) from None
            kind = entry.kind
        else:
            kind = None
        strategy = m.get("strategy")
        if strategy is not None and strategy not in STRATEGIES:
            raise fail(
                f"{where}.strategy", f"must be one of {', '.join(STRATEGIES)}, got {strategy!r}"
            )
        if kind == "pretrained" and strategy is None:
            raise fail(
                f"{where}.strategy",
                f"{arch} is pretrained: name a strategy ({', '.join(STRATEGIES)})",
            )
        if kind == "scratch" and strategy is not None:
            raise fail(f"{where}.strategy", f"{arch} is trained from scratch: it takes no strategy")
        own_training = dict(m.get("training", {}))
        augment = own_training.pop("augment", m.get("augment", base_augment))
        preprocess = own_training.pop("preprocess", m.get("preprocess", base_preprocess))
        try:
            training = resolve_training(
                {**base_training, **own_training}, where=f"{where}.training"
            )
        except ZoobenchError as exc:
            raise ZoobenchError(f"profile {source}: {exc}") from None
        for key, steps in (("augment", augment), ("preprocess", preprocess)):
            if not isinstance(steps, list):
                raise fail(f"{where}.{key}", 'must be a list of tables like {name = "flip"}')
        try:  # every step and parameter checked now, defaults filled in as the config records them
            augment = validate_policy(augment)
            preprocess = validate_steps(preprocess)
        except ZoobenchError as exc:
            raise fail(where, str(exc)) from None
        tune = m.get("tune", False)
        if tune is True:
            tune = copy.deepcopy(tuner)
        elif isinstance(tune, dict):
            tune = dict(copy.deepcopy(tuner), **tune)
            _check_tuner(tune, f"{where}.tune", fail)
        elif tune is False:
            tune = None
        else:
            raise fail(f"{where}.tune", f"must be true, false or a table, got {tune!r}")
        hp = m.get("hp", {})
        if not isinstance(hp, dict):
            raise fail(f"{where}.hp", "must be a table of hyperparameter values")
        counts = {}
        for key in ("seeds", "bagging"):
            value = m.get(key, 1 if key == "seeds" else 0)
            if not isinstance(value, int) or value < (1 if key == "seeds" else 0):
                raise fail(
                    f"{where}.{key}",
                    f"must be a {'positive' if key == 'seeds' else 'non-negative'} integer",
                )
            counts[key] = value
        if counts["bagging"] and counts["seeds"] > 1:
            raise fail(where, "use either seeds or bagging, not both")
        if tune and (counts["bagging"] or counts["seeds"] > 1):
            raise fail(where, "a tuned member cannot also have seeds or bagging (use top_k)")
        input_size = m.get("input_size")
        if input_size is not None and (not isinstance(input_size, int) or input_size < 8):
            raise fail(f"{where}.input_size", f"must be an integer >= 8, got {input_size!r}")
        transfer = m.get("transfer", {})
        if not isinstance(transfer, dict) or (transfer and strategy is None):
            raise fail(
                f"{where}.transfer", "is a table of transfer options, for pretrained members only"
            )
        unknown = sorted(set(transfer) - set(TRANSFER_OPTIONS) - {"head_trials"})
        if unknown:
            known = ", ".join(sorted({*TRANSFER_OPTIONS, "head_trials"}))
            raise fail(f"{where}.transfer", f"unknown option {', '.join(unknown)} (known: {known})")
        head_trials = transfer.get("head_trials", 1)
        if not isinstance(head_trials, int) or isinstance(head_trials, bool) or head_trials < 1:
            raise fail(
                f"{where}.transfer", f"head_trials must be a whole number >= 1, got {head_trials!r}"
            )
        try:
            validate_transfer({k: v for k, v in transfer.items() if k != "head_trials"})
        except ZoobenchError as exc:
            raise fail(f"{where}.transfer", str(exc).removeprefix("transfer option ")) from None
        name = m.get("name") or _default_name(arch, strategy, input_size)
        members.append(
            MemberSpec(
                name=name,
                architecture=arch,
                hp=dict(hp),
                training=training,
                preprocess=list(preprocess),
                augment=list(augment),
                strategy=strategy,
                input_size=input_size,
                tune=tune,
                seeds=counts["seeds"],
                bagging=counts["bagging"],
                transfer=dict(transfer),
            )  # fmt: skip
        )
    names = [m.name for m in members]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise fail(
            "members", f"member names must differ; repeated: {', '.join(dupes)} (set name = ...)"
        )
    for section in ("ensembles", "report"):
        if not isinstance(raw.get(section, {}), dict):
            raise fail(section, "must be a table")
    deterministic = raw.get("deterministic", False)
    if not isinstance(deterministic, bool):
        raise fail("deterministic", "must be true or false")
    return Profile(
        name=str(raw.get("name", default_name)),
        source=source,
        description=str(raw.get("description", "")),
        seed=seed,
        budget_seconds=budget,
        deterministic=deterministic,
        data=data,
        members=members,
        ensembles=dict(raw.get("ensembles", {})),
        report=dict(raw.get("report", {})),
        raw=raw,
    )


def _default_name(arch: str, strategy: str | None, input_size: int | None) -> str:
    if strategy:
        return f"{arch} / {strategy}" + (f" @{input_size}px" if input_size else "")
    return arch + (f" @{input_size}px" if input_size else "")


def _unknown(table: dict, known: set[str], prefix: str, fail) -> None:
    for key in table:
        if key not in known:
            raise fail(f"{prefix}{key}", f"unknown key (known: {', '.join(sorted(known))})")


def _check_tuner(tuner: dict[str, Any], where: str, fail) -> None:
    _unknown(tuner, set(TUNER_DEFAULTS), f"{where}.", fail)
    if tuner["algorithm"] not in ALGORITHMS:
        raise fail(
            f"{where}.algorithm",
            f"must be one of {', '.join(ALGORITHMS)}, got {tuner['algorithm']!r}",
        )
    for key in ("max_trials", "epochs", "top_k"):
        if not isinstance(tuner[key], int) or tuner[key] < 1:
            raise fail(f"{where}.{key}", f"must be a positive integer, got {tuner[key]!r}")
    if tuner["top_k"] > tuner["max_trials"]:
        raise fail(f"{where}.top_k", "cannot exceed max_trials")
    search = tuner.get("search", {})
    if not isinstance(search, dict):
        raise fail(f"{where}.search", "must be a table")
    for key, space in search.items():
        if key not in SEARCHABLE:
            raise fail(
                f"{where}.search.{key}",
                f"cannot be searched (searchable: {', '.join(sorted(SEARCHABLE))})",
            )
        if key == "augment":
            if (
                not isinstance(space, dict)
                or not space
                or not all(isinstance(v, list) for v in space.values())
            ):
                raise fail(
                    f"{where}.search.augment",
                    'must be a table of named policies, e.g. {none = [], flip = [{name = "flip"}]}',
                )
            for policy_name, policy in space.items():
                try:
                    validate_policy(policy)
                except ZoobenchError as exc:
                    raise fail(f"{where}.search.augment.{policy_name}", str(exc)) from None
        elif isinstance(space, list):
            if not space:
                raise fail(f"{where}.search.{key}", "an empty list of choices")
        elif isinstance(space, dict):
            if not {"min", "max"} <= set(space) or set(space) - {"min", "max", "sampling", "step"}:
                raise fail(
                    f"{where}.search.{key}",
                    "a range needs min and max (and optionally sampling, step)",
                )
        else:
            raise fail(f"{where}.search.{key}", "must be a list of choices or a {min, max} range")
