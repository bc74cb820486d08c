"""A run folder's guard rails: zoobench's marker, a safe ``--fresh`` and the lock a run holds.

Like git refusing to overwrite what it did not create, zoobench only ever deletes a folder that
carries its marker (``.zoobench``), and then only the entries zoobench itself writes there; a
user's own files are left alone. Like a database's lock file, one ``zoobench run`` at a time owns
a folder: the lock is an ``fcntl`` lock on ``.zoobench.lock``, which the kernel drops when its
process dies, so a lock left by a killed run is taken over, not obeyed. The file records the
holder's PID, host and command (secrets redacted) for the refusal message.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

from benchmark import atomic
from benchmark.errors import ZoobenchError
from benchmark.formatting import utc_now
from benchmark.store.runstore import LOCK, MARKER, RunStore
from benchmark.store.runstore import (
    TOP_LEVEL as OWNED,  # what zoobench writes: --fresh removes only these
)
from zoo.index import installed_version

log = logging.getLogger(__name__)

# Command-line options whose value is a secret: the lock file (mode 0644, on a shared disk, left
# behind by a SIGKILL) records the command with their values replaced by REDACTED.
SECRET_OPTIONS = ("--token",)
REDACTED = "<redacted>"


def redacted_command(argv: list[str]) -> str:
    """``argv`` as one line, each secret option's value replaced (``--token X``, ``--token=X`` and
    the abbreviations argparse accepts, such as ``--tok X``)."""

    def secret(arg: str) -> bool:
        name = arg.split("=", 1)[0]
        return len(name) > 3 and any(option.startswith(name) for option in SECRET_OPTIONS)

    out: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            out.append(REDACTED)
            hide_next = False
        elif arg.startswith("--") and secret(arg):
            if "=" in arg:
                out.append(f"{arg.split('=', 1)[0]}={REDACTED}")
            else:
                out.append(arg)
                hide_next = True
        else:
            out.append(arg)
    return " ".join(out)


def is_run(root: Path) -> bool:
    """Whether ``root`` is a zoobench run folder (the marker, or a run.json from before markers)."""
    return (root / MARKER).is_file() or RunStore(root).exists()


def check_out(root: Path, *, fresh: bool) -> None:
    """Refuse an ``--out`` that is a file, or a folder of someone else's files (before any write).

    A folder that is not a run but holds files is refused: its files are not zoobench's to mix
    results into, nor to delete.
    """
    if root.exists() and not root.is_dir():
        raise ZoobenchError(f"--out {root} is a file, not a folder: choose another --out")
    # A lone lock file is a run that stopped before it wrote anything (a data error, say).
    if root.is_dir() and any(e.name != LOCK for e in root.iterdir()) and not is_run(root):
        raise ZoobenchError(
            f"{root} holds files zoobench did not write (no {MARKER} marker): refusing to "
            f"{'delete' if fresh else 'write into'} it; choose an empty or new --out"
        )


def mark(root: Path, identity: dict | None = None) -> None:
    """Write zoobench's marker, with the run's identity (kept should run.json be torn)."""
    atomic.write_json(
        root / MARKER,
        {
            "zoobench": installed_version("zoobench"),
            "what": "a zoobench run folder",
            "identity": identity,
        },
    )


def read_marker(root: Path) -> dict:
    try:
        return atomic.read_json(root / MARKER)
    except (OSError, ValueError):
        return {}


def remove_run_files(root: Path) -> list[str]:
    """``--fresh``: delete what zoobench wrote in run ``root`` (not the lock); return what is left."""
    for entry in root.iterdir():
        if entry.name in OWNED - {LOCK, MARKER}:
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    left = sorted(e.name for e in root.iterdir() if e.name not in OWNED)
    if left:
        log.info("--fresh kept files zoobench did not write in %s: %s", root, ", ".join(left))
    return left


@contextlib.contextmanager
def locked(root: Path) -> Iterator[dict]:
    """Hold ``root``'s run lock for the ``with`` block; refuse (one line) while another run holds it."""
    import fcntl

    root.mkdir(parents=True, exist_ok=True)
    path = root / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            raise ZoobenchError(
                f"{root} is in use by another zoobench run (PID {holder.get('pid', '?')} on "
                f"{holder.get('host', '?')} since {holder.get('since', '?')}); wait for it to "
                "finish or stop it, or choose another --out"
            ) from None
        previous = _holder(fd)
        if previous.get("pid"):  # the kernel released it: that process is gone
            log.info(
                "taking over the lock left by PID %s on %s", previous["pid"], previous.get("host")
            )
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": utc_now(),
            "command": redacted_command(sys.argv)[:300],
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
        os.fsync(fd)
        try:
            yield me
        finally:
            os.ftruncate(fd, 0)  # an empty lock file: nobody holds it
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def holder(root: Path) -> dict | None:
    """Who holds ``root``'s run lock ({"pid", "host", "since", ...}), or None when nobody does."""
    import fcntl

    path = root / LOCK
    if not path.is_file():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _holder(fd) or {"pid": "?", "host": "?"}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _holder(fd: int) -> dict:
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
        return json.loads(text) if text else {}
    except (OSError, ValueError):
        return {}
