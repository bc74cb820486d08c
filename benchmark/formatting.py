"""How numbers read on the console and in reports: one formatter per kind of number."""

from __future__ import annotations

import datetime as dt
import math
import re

from benchmark.errors import ZoobenchError


def duration(seconds: float) -> str:
    """312.5 -> '5m12s', 4.26 -> '4.3s', 7530 -> '2h05m'."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    if seconds < 60:
        return f"{max(0.0, seconds):.1f}s" if seconds < 10 else f"{seconds:.0f}s"
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def count(value: float) -> str:
    """1234567 -> '1.23M', 272474 -> '272k': parameter and FLOP counts at a glance."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.3g}{unit}"
    return f"{value:.0f}"


def utc_now() -> str:
    """The time now as run files record it: ``2026-11-28T10:00:00Z``."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def percent(fraction: float, digits: int = 2) -> str:
    """0.8050 -> '80.50%'."""
    return f"{100 * fraction:.{digits}f}%"


_PART = re.compile(r"(\d+(?:\.\d+)?)([hms])")
_UNIT = {"h": 3600.0, "m": 60.0, "s": 1.0}


def parse_duration(text: str | float | int | None, option: str = "--budget") -> float | None:
    """Seconds in "90s", "30m", "1h", "1h30m" or a plain number of seconds; None stays None."""
    if text is None:
        return None
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        raw = str(text).strip().lower().replace(" ", "")
        if re.fullmatch(r"\d+(\.\d+)?", raw):
            seconds = float(raw)
        elif raw and re.fullmatch(r"(\d+(\.\d+)?[hms])+", raw):
            seconds = sum(float(n) * _UNIT[u] for n, u in _PART.findall(raw))
        else:
            raise ZoobenchError(
                f"{option}: cannot read {text!r} as a duration (try 90s, 30m, 1h30m)"
            )
    if not seconds > 0:
        raise ZoobenchError(f"{option}: a budget must be positive, got {text!r}")
    return seconds
