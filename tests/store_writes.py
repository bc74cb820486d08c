"""Who writes inside a run folder: a recorder around ``benchmark.atomic`` (every zoobench write goes
through ``atomic_path``), and the check that only the run store (``benchmark.store``) did.

The writing module is the first frame above the atomic helpers and ``benchmark.modelfile`` (which
take their path from their caller). A file in the run folder that no recorded write made was
written some other way (not atomically): that fails too.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

from benchmark import atomic

HELPERS = ("benchmark.atomic", "benchmark.modelfile", "contextlib")
# Folders a run folder lends to others: Keras Tuner's trials, TensorBoard's logs, the report's pages
# (the store hands out their paths: tuner_dir, report_dir), and the folder's lock (benchmark.store).
LENT = ("tuner", "tensorboard", "report")


def _writer() -> str:
    frame = sys._getframe(2)
    while frame is not None and frame.f_globals.get("__name__", "").startswith(HELPERS):
        frame = frame.f_back
    return frame.f_globals.get("__name__", "?") if frame is not None else "?"


@contextlib.contextmanager
def recording(writes: list[tuple[Path, str]]) -> Iterator[list[tuple[Path, str]]]:
    """Record ``(path, writing module)`` for every atomic write while the block runs."""
    real = atomic.atomic_path

    @contextlib.contextmanager
    def recorded(path):
        writes.append((Path(path).resolve(), _writer()))
        with real(path) as tmp:
            yield tmp

    atomic.atomic_path = recorded
    try:
        yield writes
    finally:
        atomic.atomic_path = real


def foreign_writes(writes: list[tuple[Path, str]], root: Path) -> list[str]:
    """Writes inside ``root`` by a module outside ``benchmark.store``, and files in it no recorded
    write made (lent folders aside)."""
    from benchmark.store.runstore import LOCK, STAGED

    root = root.resolve()
    found, written = [], set()
    for path, module in writes:
        if not path.is_relative_to(root) or path.relative_to(root).parts[0] in LENT:
            continue
        rel = path.relative_to(root)
        if rel.parts[0] == STAGED:  # an ensembles rebuild, renamed into ensembles/ when whole
            rel = Path("ensembles", *rel.parts[1:])
        written.add(root / rel)
        if not module.startswith("benchmark.store."):
            found.append(f"{module} wrote {rel}")
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        ours = path.is_file() and rel.parts[0] not in LENT and path.name != LOCK
        if ours and path.resolve() not in written:
            found.append(f"{rel} was written without benchmark.atomic")
    return sorted(set(found))
