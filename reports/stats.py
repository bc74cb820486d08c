"""Is the winner really better? McNemar's test on paired test predictions, and the data used.

Two models scored on the same test images are paired: only the images where exactly one of them is
right carry evidence. McNemar's test uses those discordant counts: an exact binomial test when
there are few of them, the chi-square statistic with continuity correction otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from reports.rundata import RunData

EXACT_BELOW = 25  # discordant pairs under this use the exact binomial test


@dataclass(frozen=True)
class McNemar:
    """McNemar's test of model A against model B on the same labelled images."""

    a_only: int  # images A gets right and B wrong
    b_only: int  # images B gets right and A wrong
    statistic: float  # chi-square statistic, or the smaller discordant count for the exact test
    pvalue: float
    method: (
        str  # "exact binomial" | "chi-square with continuity correction" | "no discordant pairs"
    )


def mcnemar(
    correct_a: np.ndarray, correct_b: np.ndarray, exact_below: int = EXACT_BELOW
) -> McNemar:
    """McNemar's two-sided test from two boolean 'was this image classified right' vectors."""
    from scipy.stats import binomtest, chi2

    correct_a = np.asarray(correct_a, dtype=bool)
    correct_b = np.asarray(correct_b, dtype=bool)
    if correct_a.shape != correct_b.shape:
        raise ValueError(f"paired vectors differ in shape: {correct_a.shape} vs {correct_b.shape}")
    a_only = int(np.sum(correct_a & ~correct_b))
    b_only = int(np.sum(~correct_a & correct_b))
    discordant = a_only + b_only
    if discordant == 0:
        return McNemar(a_only, b_only, 0.0, 1.0, "no discordant pairs")
    if discordant < exact_below:
        p = binomtest(min(a_only, b_only), discordant, 0.5, alternative="two-sided").pvalue
        return McNemar(
            a_only, b_only, float(min(a_only, b_only)), float(min(p, 1.0)), "exact binomial"
        )
    statistic = (abs(a_only - b_only) - 1.0) ** 2 / discordant
    return McNemar(
        a_only,
        b_only,
        float(statistic),
        float(chi2.sf(statistic, df=1)),
        "chi-square with continuity correction",
    )


@dataclass(frozen=True)
class Comparison:
    """One pairwise comparison shown in the report."""

    title: str
    a: str
    b: str
    a_accuracy: float
    b_accuracy: float
    test: McNemar
    per_class: pd.DataFrame  # class, a, b, difference (per-class accuracy = recall)


def compare(
    run: RunData, board: pd.DataFrame, key_a: str, key_b: str, title: str
) -> Comparison | None:
    """McNemar's test and per-class accuracy differences of two leaderboard rows (by id)."""
    if run.y_test is None:
        return None
    probs_a = run.probs(run.entry(key_a), "test")
    probs_b = run.probs(run.entry(key_b), "test")
    if probs_a is None or probs_b is None:
        return None
    correct_a = probs_a.argmax(axis=1) == run.y_test
    correct_b = probs_b.argmax(axis=1) == run.y_test
    names = board.set_index("id")["model"]
    per_class = per_class_accuracy(correct_a, correct_b, run.y_test, run.class_names)
    return Comparison(
        title,
        str(names[key_a]),
        str(names[key_b]),
        float(correct_a.mean()),
        float(correct_b.mean()),
        mcnemar(correct_a, correct_b),
        per_class,
    )


def per_class_accuracy(
    correct_a: np.ndarray, correct_b: np.ndarray, labels: np.ndarray, class_names
) -> pd.DataFrame:
    """Per-class accuracy of A and B and their difference (A - B), one row per class."""
    rows = []
    for label, name in enumerate(class_names):
        mask = labels == label
        acc_a = float(correct_a[mask].mean()) if mask.any() else math.nan
        acc_b = float(correct_b[mask].mean()) if mask.any() else math.nan
        rows.append(
            {
                "class": str(name),
                "a": acc_a,
                "b": acc_b,
                "difference": acc_a - acc_b,
                "support": int(mask.sum()),
            }
        )
    return pd.DataFrame(rows)


def comparisons(run: RunData, board: pd.DataFrame) -> list[Comparison]:
    """Best ensemble vs best single member, and the top two rows (when that is a different pair)."""
    scored = board[(board["status"] == "done") & board["test_accuracy"].notna()]
    out: list[Comparison] = []
    members = scored[scored["kind"] != "ensemble"]
    ensembles = scored[scored["kind"] == "ensemble"]
    pairs = []
    if len(members) and len(ensembles):
        pairs.append(
            (ensembles["id"].iloc[0], members["id"].iloc[0], "Best ensemble vs best single member")
        )
    if len(scored) >= 2:
        top = (scored["id"].iloc[0], scored["id"].iloc[1], "Top two rows of the leaderboard")
        if not pairs or set(top[:2]) != set(pairs[0][:2]):
            pairs.append(top)
    for key_a, key_b, title in pairs:
        result = compare(run, board, key_a, key_b, title)
        if result is not None:
            out.append(result)
    return out


def describe_run(run: RunData) -> list[tuple[str, str]]:
    """(label, value) lines saying what data, settings and machine produced the numbers."""
    meta: dict[str, Any] = run.meta
    data = meta.get("data") or {}
    profile = meta.get("profile") or {}
    sizes = data.get("sizes") or {}
    lines = [
        ("Run", str(meta.get("name") or run.store.root.name)),
        ("Profile", str(profile.get("name", "-")) if isinstance(profile, dict) else str(profile)),
        ("Dataset", str(data.get("dataset", "-"))),
        ("Source", str(data.get("source", "-"))),
        (
            "Classes",
            f"{len(run.class_names)}: {', '.join(run.class_names)}" if run.class_names else "-",
        ),
        (
            "Images (train / val / test)",
            " / ".join(
                f"{sizes[k]:,}" if isinstance(sizes.get(k), int) else "-"
                for k in ("train", "val", "test")
            ),
        ),
        ("Seed", str(meta.get("seed", data.get("seed", "-")))),
        ("Data fingerprint", str(data.get("fingerprint", "-"))),
        (
            "Backend",
            str(
                meta.get("backend")
                or (meta.get("machine") or {}).get("backend")
                or "tensorflow (not recorded)"
            ),
        ),
        ("Machine", _machine(meta.get("machine") or {})),
        (
            "Versions",
            ", ".join(f"{k} {v}" for k, v in sorted((meta.get("versions") or {}).items())) or "-",
        ),
        ("Budget", _seconds(meta.get("budget_seconds"))),
        ("Wall time", _seconds(meta.get("wall_seconds"))),
        (
            "Started / finished",
            f"{meta.get('started_at', '-')} / {meta.get('finished_at') or 'not finished'}",
        ),
    ]
    return lines


def _machine(machine: dict[str, Any]) -> str:
    if not machine:
        return "-"
    parts = []
    for key, value in machine.items():
        if key in ("gpus", "gpu"):  # an empty GPU list is worth saying: the numbers are CPU numbers
            names = value if isinstance(value, list) else [value] if value else []
            names = [str(n) for n in names if n and str(n).lower() != "none"]
            parts.append(f"GPU: {', '.join(names)}" if names else "GPU: none (CPU only)")
            continue
        if value in (None, "", [], {}) or key == "backend":  # the backend has its own line
            continue
        parts.append(f"{key.replace('_', ' ')}: {value}")
    return "; ".join(parts) or "-"


def _seconds(value: Any) -> str:
    from benchmark.formatting import duration

    try:
        return duration(float(value)) if value is not None else "-"
    except (TypeError, ValueError):
        return str(value)


def format_pvalue(p: float) -> str:
    """'p < 0.0001' or 'p = 0.1094'."""
    return "p < 0.0001" if p < 1e-4 else f"p = {p:.4f}"


def summary_sentence(c: Comparison, level: float = 0.05) -> str:
    """The comparison in one plain-text sentence, verdict included, for both renderers."""
    t = c.test
    verdict = (
        f"the difference is significant at the {level:.0%} level"
        if t.pvalue < level
        else f"the difference is not significant at the {level:.0%} level"
    )
    return (
        f"A = {c.a} ({c.a_accuracy:.2%}), B = {c.b} ({c.b_accuracy:.2%}). McNemar's test "
        f"({t.method}): A right and B wrong on {t.a_only} images, B right and A wrong on "
        f"{t.b_only}; statistic {t.statistic:.3f}, {format_pvalue(t.pvalue)}: {verdict}."
    )
