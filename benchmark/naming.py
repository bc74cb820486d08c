"""Names people read and names folders get: one place builds each."""

from __future__ import annotations

import re


def member_name(
    architecture: str, strategy: str | None = None, input_size: int | None = None
) -> str:
    """A member's leaderboard name, e.g. ``efficientnet_lite0 / feature-extraction @128px``."""
    name = architecture + (f" / {strategy}" if strategy else "")
    return name + (f" @{input_size}px" if input_size else "")


def slug(text: str, fallback: str = "item", max_length: int = 60) -> str:
    """``text`` as a folder-safe name: runs of other characters become one ``-``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")[:max_length] or fallback
