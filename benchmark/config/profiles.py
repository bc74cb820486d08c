"""Benchmark profiles: TOML files saying what to train, tune and ensemble, checked before anything runs.

A profile is a shipped name (``benchmark/config/profiles/<name>.toml``: smoke, cpu-quick, cpu-tour, standard, full, ...)
or a path to the user's own file. Mistakes fail at once with the file and the key named, not an
hour into a run. The format is documented in docs/profiles.md.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, from PyPI
    import tomli as tomllib

from benchmark.config.schema import (
    DATA_DEFAULTS,
    DATA_RULES,
    ENSEMBLES_TABLE,
    ENSEMBLES_TABLE_RULES,
    MEMBER_DEFAULTS,
    MEMBER_RULES,
    RANGE_KEYS,
    REPORT_DEFAULTS,
    ROBUSTNESS_DEFAULTS,
    SAMPLINGS,
    SEARCHABLE,
    STRATEGIES,
    TOP_DEFAULTS,
    TOP_RULES,
    TRANSFER_DEFAULTS,
    TUNER_DEFAULTS,
    TUNER_RULES,
    check_table,
    resolve_ensembles,
    resolve_report,
    resolve_robustness,
    resolve_training,
    validate_transfer_options,
)
from benchmark.data.augment import validate_policy
from benchmark.data.preprocess import validate_steps
from benchmark.errors import ZoobenchError
from benchmark.formatting import parse_duration
from benchmark.naming import member_name

DEFAULT_PROFILE = "cpu-quick"


def resizes_inside(strategy: str | None) -> bool:
    """Whether a member's model resizes its pictures itself. A pretrained member (every one names a
    strategy: the schema checks it) takes the run's pixels and resizes to its backbone's side
    inside; a from-scratch member is fed arrays already at its ``input_size``. The one rule for
    "which input size" (training's arrays, refits, the names people read)."""
    return strategy is not None


def outside_size(strategy: str | None, input_size: int | None) -> int | None:
    """The side a member's arrays are resized to before its model (None: as they are)."""
    return None if resizes_inside(strategy) else input_size


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
    boosting: int = 0  # SAMME rounds (benchmark.train.boosting); 0: not boosted
    # benchmark.train.transfer options as the profile wrote them (part of the member's id: keep as is)
    transfer: dict[str, Any] = field(default_factory=dict)

    @property
    def outside_size(self) -> int | None:
        """The side its image arrays are resized to before they reach its model (see
        :func:`outside_size`)."""
        return outside_size(self.strategy, self.input_size)

    @property
    def transfer_options(self) -> dict[str, Any]:
        """``transfer`` with every default applied (schema.TRANSFER_DEFAULTS): what the strategy
        runs with, and what the planner must cost (e.g. ``head_trials``)."""
        return {**TRANSFER_DEFAULTS, **self.transfer}


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
    robustness: dict[str, Any] = field(default_factory=dict)  # [robustness], defaults applied
    costing: str = "auto"  # how the plan costs members (schema.COSTINGS; benchmark.plan.costmodel)

    @property
    def ensembles_enabled(self) -> bool:
        return bool(self.ensembles.get("enabled", ENSEMBLES_TABLE["enabled"]))

    @property
    def report_enabled(self) -> bool:
        return bool(self.report.get("enabled", REPORT_DEFAULTS["enabled"]))

    @property
    def robustness_enabled(self) -> bool:
        return bool(self.robustness.get("enabled", ROBUSTNESS_DEFAULTS["enabled"]))

    @property
    def robustness_config(self) -> dict[str, Any]:
        """The [robustness] settings for benchmark.run.robustness: defaults applied, no ``enabled``."""
        return {k: v for k, v in resolve_robustness(self.robustness).items() if k != "enabled"}

    @property
    def ensemble_config(self) -> dict[str, Any]:
        """The [ensembles] settings for ensembles.build_ensembles: defaults applied, no ``enabled``."""
        return {k: v for k, v in self.ensembles.items() if k != "enabled"}

    def to_json(self) -> dict[str, Any]:
        """What run.json records: the name, the file and the profile as written."""
        return {"name": self.name, "source": self.source, **copy.deepcopy(self.raw)}


def shipped_profiles() -> list[str]:
    folder = resources.files("benchmark.config") / "profiles"
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
        resource = resources.files("benchmark.config") / "profiles" / f"{name_or_path}.toml"
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


def parse_profile(
    raw: dict[str, Any],
    source: str,
    default_name: str = "profile",
    *,
    check_architectures: bool = True,
) -> Profile:
    """Validate a profile's TOML data; every error names ``source`` and the key."""

    def fail(key: str, message: str) -> ZoobenchError:
        return ZoobenchError(f"profile {source}: {key}: {message}")

    def checked(values: Any, rules: dict, where: str) -> None:
        try:
            check_table(values, rules, where)
        except ZoobenchError as exc:
            raise ZoobenchError(f"profile {source}: {exc}") from None

    checked(raw, TOP_RULES, "")
    seed = raw.get("seed", TOP_DEFAULTS["seed"])
    try:
        budget = parse_duration(raw.get("budget"), option="budget")
    except ZoobenchError as exc:
        raise fail("budget", str(exc).split(": ", 1)[-1]) from None
    data = dict(raw.get("data", {}))
    checked(data, DATA_RULES, "data")
    data.setdefault("dataset", DATA_DEFAULTS["dataset"])

    base_training = dict(raw.get("training", {}))
    base_augment = base_training.pop("augment", [])
    base_preprocess = base_training.pop("preprocess", [])
    try:
        resolve_training(base_training, where="training")
    except ZoobenchError as exc:
        raise ZoobenchError(f"profile {source}: {exc}") from None
    tuner = dict(TUNER_DEFAULTS, **raw.get("tuner", {}))
    _check_tuner(tuner, "tuner", fail, checked)

    members_raw = raw.get("members", [])
    if not isinstance(members_raw, list) or not members_raw:
        raise fail("members", "a profile needs at least one [[members]] entry")
    members = []
    for i, m in enumerate(members_raw):
        where = f"members[{i}]"
        checked(m, MEMBER_RULES, where)
        arch = m.get("architecture")
        if not isinstance(arch, str) or not arch:
            raise fail(f"{where}.architecture", "is required (a zoo architecture name)")
        if check_architectures:  # the zoo's cached index answers without importing Keras
            from zoo.index import kind_of
            from zoo.registry import ZooError

            try:
                kind = kind_of(arch)
            except ZooError as exc:
                raise fail(f"{where}.architecture", str(exc)) from None
        else:
            kind = None
        strategy = m.get("strategy")
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
            training, recipe_augment = _with_recipe(
                arch if check_architectures else None, base_training, own_training, where
            )
            training = resolve_training(training, where=f"{where}.training")
        except ZoobenchError as exc:
            raise ZoobenchError(f"profile {source}: {exc}") from None
        if recipe_augment is not None and "augment" not in m.get("training", {}):
            augment = m.get("augment", recipe_augment)
        if strategy == "feature-extraction" and training["tta"] != "none":
            raise fail(
                f"{where}.training.tta",
                "test-time views are for members trained end to end, not feature "
                "extraction (it has transfer.flip_features)",
            )
        # [training]'s or a recipe's list (the member's own lists were checked with the member)
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
            _check_tuner(tune, f"{where}.tune", fail, checked)
        else:
            tune = None
        hp = m.get("hp", {})
        counts = {key: m.get(key, MEMBER_DEFAULTS[key]) for key in ("seeds", "bagging", "boosting")}
        if counts["bagging"] and counts["seeds"] > 1:
            raise fail(where, "use either seeds or bagging, not both")
        if tune and (counts["bagging"] or counts["seeds"] > 1):
            raise fail(where, "a tuned member cannot also have seeds or bagging (use top_k)")
        if counts["boosting"] and (tune or counts["bagging"] or counts["seeds"] > 1):
            other = "tune" if tune else "bagging" if counts["bagging"] else "seeds"
            raise fail(
                f"{where}.boosting",
                f"cannot be combined with {other} on the same member "
                "(each boosting round is one member trained on reweighted data)",
            )
        input_size = m.get("input_size")
        transfer = m.get("transfer", {})
        if transfer and strategy is None:
            raise fail(
                f"{where}.transfer", "is a table of transfer options, for pretrained members only"
            )
        try:
            validate_transfer_options(transfer, where=f"{where}.transfer")
        except ZoobenchError as exc:
            raise ZoobenchError(f"profile {source}: {exc}") from None
        name = m.get("name") or member_name(arch, strategy, input_size)
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
                boosting=counts["boosting"],
                transfer=dict(transfer),
            )
        )
    names = [m.name for m in members]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise fail(
            "members", f"member names must differ; repeated: {', '.join(dupes)} (set name = ...)"
        )
    tables = {}
    for section, resolve in (
        ("ensembles", _resolve_ensembles_table),
        ("report", resolve_report),
        ("robustness", resolve_robustness),
    ):
        try:
            tables[section] = resolve(raw.get(section, {}))
        except ZoobenchError as exc:
            raise ZoobenchError(f"profile {source}: {exc}") from None
    deterministic = raw.get("deterministic", TOP_DEFAULTS["deterministic"])
    costing = raw.get("costing", TOP_DEFAULTS["costing"])
    return Profile(
        name=str(raw.get("name", default_name)),
        source=source,
        description=str(raw.get("description", "")),
        seed=seed,
        budget_seconds=budget,
        deterministic=deterministic,
        data=data,
        members=members,
        ensembles=tables["ensembles"],
        report=tables["report"],
        raw=raw,
        robustness=tables["robustness"],
        costing=costing,
    )


def _with_recipe(
    architecture: str | None, base: dict[str, Any], own: dict[str, Any], where: str
) -> tuple[dict[str, Any], list[dict[str, Any]] | None]:
    """A member's training options before checking, and its recipe's augmentation (None: no recipe).

    The order (benchmark.config.recipes): the profile's [training], then the recipe (the member's
    ``recipe``, else the profile's, else the architecture's own), then the member's own options.
    """
    from benchmark.config.recipes import NO_RECIPE, recipe

    name = own.get("recipe", base.get("recipe"))
    if name is None and architecture is not None:
        from zoo.index import recipe_of

        name = recipe_of(architecture)
    if name is None or name == NO_RECIPE:
        return {**base, **own, "recipe": None}, None
    if not isinstance(name, str):
        raise ZoobenchError(f"{where}.training.recipe: must be a recipe's name, got {name!r}")
    try:
        found = recipe(name)
    except ZoobenchError as exc:
        raise ZoobenchError(f"{where}.training.recipe: {exc}") from None
    return {**base, **found["training"], **own, "recipe": name}, found["augment"]


def _resolve_ensembles_table(table: dict[str, Any]) -> dict[str, Any]:
    """[ensembles] with defaults applied: ``enabled`` and the settings of ensembles.build."""
    check_table(table, ENSEMBLES_TABLE_RULES, "ensembles")
    return {
        "enabled": table.get("enabled", ENSEMBLES_TABLE["enabled"]),
        **resolve_ensembles({k: v for k, v in table.items() if k != "enabled"}),
    }


def _check_tuner(tuner: dict[str, Any], where: str, fail, checked) -> None:
    checked(tuner, TUNER_RULES, where)
    if tuner["top_k"] > tuner["max_trials"]:
        raise fail(f"{where}.top_k", "cannot exceed max_trials")
    search = tuner.get("search", {})
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
            _check_search_values(key, space, where, fail)
        elif isinstance(space, dict):
            if not {"min", "max"} <= set(space) or set(space) - RANGE_KEYS:
                raise fail(
                    f"{where}.search.{key}",
                    "a range needs min and max (and optionally sampling, step)",
                )
            if space.get("sampling", "linear") not in SAMPLINGS:
                raise fail(
                    f"{where}.search.{key}.sampling",
                    f"must be one of {', '.join(SAMPLINGS)}, got {space['sampling']!r}",
                )
            _check_search_values(key, [space["min"], space["max"]], where, fail)
            if not space["min"] < space["max"]:
                raise fail(f"{where}.search.{key}", "a range needs min < max")
        else:
            raise fail(f"{where}.search.{key}", "must be a list of choices or a {min, max} range")


def _check_search_values(key: str, values: list, where: str, fail) -> None:
    """Every value a search may try is a valid training setting (checked by the [training] rules)."""
    for value in values:
        try:
            resolve_training({key: value}, where=f"{where}.search")
        except ZoobenchError as exc:
            raise fail(f"{where}.search.{key}", str(exc).split(": ", 1)[-1]) from None
