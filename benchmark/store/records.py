"""The run store's typed records: ``run.json``, an entry's ``config.json`` and ``metrics.json``.

Frozen dataclasses, written and read only by :class:`benchmark.store.runstore.RunStore`. On disk
the layout is the one earlier versions wrote (flat JSON objects), so a run folder written before
these records still resumes and reports: :meth:`from_json` keeps the keys a record does not name in
``extra`` and :meth:`to_json` writes them back beside the named ones.

A status is a :class:`Status`, never a free string: a ``metrics.json`` without a known status reads
as :attr:`Status.UNKNOWN` (not as done), and an entry with one is redone on the next run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar, TypeVar


class Status(str, Enum):
    """What became of an entry. A ``str`` so that ``status == "done"`` and JSON keep working."""

    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"  # e.g. pretrained weights unavailable
    UNFINISHED = "unfinished"  # no metrics.json: running or interrupted
    UNKNOWN = "unknown"  # metrics.json without a status zoobench writes: damaged or edited

    def __str__(self) -> str:
        return self.value

    def __hash__(self) -> int:  # as its string's: {"done": ...}[Status.DONE] and sets agree
        return str.__hash__(self)

    @classmethod
    def read(cls, value: Any) -> Status:
        """The status a file records; anything else (missing, misspelt) is UNKNOWN, never DONE."""
        try:
            return cls(value)
        except ValueError:
            return cls.UNKNOWN


WRITTEN = (Status.DONE, Status.FAILED, Status.SKIPPED)  # the statuses a metrics.json may hold

R = TypeVar("R", bound="_Record")


@dataclass(frozen=True)
class _Record:
    """Named fields plus ``extra`` (every other key of the file, kept as read)."""

    extra: Mapping[str, Any] = field(default_factory=dict, kw_only=True)
    # named keys the file it was read from lacked: written back without them while they are None
    absent: frozenset[str] = field(default=frozenset(), kw_only=True, repr=False, compare=False)
    OMIT_NONE: ClassVar[frozenset[str]] = frozenset()  # named fields never written as null

    @classmethod
    def _names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls) if f.name not in ("extra", "absent")]

    @classmethod
    def from_json(cls: type[R], data: Mapping[str, Any]) -> R:
        if not isinstance(data, Mapping):
            raise TypeError(f"a JSON object is needed, got {type(data).__name__}")
        names = cls._names()
        known = {k: data[k] for k in names if k in data}
        extra = {k: v for k, v in data.items() if k not in names}
        return cls(**known, extra=extra, absent=frozenset(n for n in names if n not in data))

    def to_json(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in self._names()}
        left_out = self.OMIT_NONE | self.absent
        out = {k: v for k, v in out.items() if v is not None or k not in left_out}
        out.update(self.extra)
        return out

    def with_extra(self: R, **more: Any) -> R:
        """A copy with ``more`` keys added to ``extra`` (method-specific facts)."""
        return dataclasses.replace(self, extra={**self.extra, **more})


@dataclass(frozen=True)
class MemberConfig(_Record):
    """A member's ``config.json``: what defines it (its ID is a hash of the definition)."""

    id: str = ""
    name: str | None = None
    architecture: str | None = None
    kind: str | None = None  # the zoo entry's: "scratch" or "pretrained"
    family: str | None = None
    strategy: str | None = None  # a pretrained member's transfer strategy
    input_size: int | None = None
    hp: Mapping[str, Any] = field(default_factory=dict)
    training: Mapping[str, Any] = field(default_factory=dict)
    preprocess: list[dict[str, Any]] = field(default_factory=list)
    augment: list[dict[str, Any]] = field(default_factory=list)
    seed: int | None = None
    bootstrap: Mapping[str, Any] | None = None
    group: str | None = None
    class_names: list[str] = field(default_factory=list)

    @property
    def outside_size(self) -> int | None:
        """The side its arrays are resized to before its model (``config.profiles.outside_size``)."""
        from benchmark.config.profiles import outside_size

        return outside_size(self.strategy, self.input_size)


@dataclass(frozen=True)
class EnsembleConfig(_Record):
    """An ensemble's ``config.json``: its members and how it combines them."""

    name: str | None = None
    method: str | None = None
    members: list[str] = field(default_factory=list)
    member_names: list[str] = field(default_factory=list)
    weights: list[float] | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    stacker: Mapping[str, Any] | None = None  # the stacker's settings; its arrays in stacker.npz
    OMIT_NONE: ClassVar[frozenset[str]] = frozenset({"stacker"})


@dataclass(frozen=True)
class Metrics(_Record):
    """An entry's ``metrics.json``, written last: it marks the entry complete.

    ``files`` (each file's sha256 when the entry was written) is filled in by the store."""

    status: Status
    reason: str = ""
    val_accuracy: float | None = None
    val_loss: float | None = None
    params: int | None = None
    flops: int | None = None
    epochs: int | None = None
    train_seconds: float | None = None
    train_images_per_second: float | None = None
    inference_images_per_second: float | None = None
    finished_at: str | None = None
    files: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Metrics:
        """A metrics.json as written; a missing or unknown status reads as UNKNOWN."""
        if not isinstance(data, Mapping):
            raise TypeError(f"a JSON object is needed, got {type(data).__name__}")
        return super().from_json({**data, "status": Status.read(data.get("status"))})

    def to_json(self) -> dict[str, Any]:
        """The flat object earlier versions wrote; unset optional figures are left out."""
        out: dict[str, Any] = {"status": self.status.value, "reason": self.reason}
        for name in self._names():
            value = getattr(self, name)
            if name not in out and name != "files" and value is not None:
                out[name] = value
        out.update(self.extra)
        if self.files:
            out["files"] = dict(self.files)
        return out

    @property
    def ok(self) -> bool:
        return self.status is Status.DONE


@dataclass(frozen=True)
class RunRecord(_Record):
    """``run.json``: what made the run (identity, profile, seed, data) and where and when it ran."""

    name: str | None = None
    identity: Mapping[str, Any] | None = None
    profile: Mapping[str, Any] | None = None
    seed: int | None = None
    data: Mapping[str, Any] | None = None
    backend: str | None = None
    versions: Mapping[str, Any] | None = None
    machine: Mapping[str, Any] | None = None
    budget_seconds: float | None = None
    started_at: str | None = None
    finished_at: str | None = None  # None while the run goes on
    wall_seconds: float | None = None
    deterministic: bool | None = None
    strategy: str | None = None

    @property
    def class_names(self) -> list[str]:
        return [str(c) for c in (self.data or {}).get("class_names") or []]

    @property
    def image_shape(self) -> tuple[int, int, int] | None:
        """(H, W, C) of the run's images, which members were trained from (None: not recorded)."""
        shape = (self.data or {}).get("input_shape")
        return tuple(int(s) for s in shape) if shape else None  # type: ignore[return-value]

    @property
    def profile_name(self) -> str | None:
        return (self.profile or {}).get("name")
