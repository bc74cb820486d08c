"""Named steps with keyword parameters: the shared shape of preprocessing and augmentation recipes.

A recipe is a list of dicts such as ``[{"name": "cutout", "size": 8}]``, written in a profile and
recorded in a member's config. Both kinds are checked the same way, with messages that name the
step and the parameter.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

from benchmark.errors import ZoobenchError


def parameters(fn: Callable[..., Any], skip: int = 0) -> dict[str, Any]:
    """Keyword parameters of ``fn`` with their defaults, after the first ``skip`` positional ones."""
    params = list(inspect.signature(fn).parameters.values())[skip:]
    return {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}


def check_steps(
    steps: Sequence[dict[str, Any]], known: dict[str, dict[str, Any]], what: str
) -> list[dict[str, Any]]:
    """Check names and parameter names against ``known``; return the steps with defaults filled in."""
    out = []
    for i, spec in enumerate(steps):
        if not isinstance(spec, dict) or "name" not in spec:
            raise ZoobenchError(f"{what} step #{i + 1} must be a table with a 'name', got {spec!r}")
        name = spec["name"]
        if name not in known:
            raise ZoobenchError(
                f"unknown {what} step {name!r}; known steps: {', '.join(sorted(known))}"
            )
        params = {k: v for k, v in spec.items() if k != "name"}
        unknown = sorted(set(params) - set(known[name]))
        if unknown:
            raise ZoobenchError(
                f"{what} step {name!r} has no parameter {', '.join(unknown)}; "
                f"it takes {', '.join(known[name]) or 'none'}"
            )
        out.append({"name": name, **known[name], **params})
    return out
