"""Dialect sections -> Darknet primitive sections (the dialect lands in a later step)."""
from __future__ import annotations

from typing import Sequence

from darkcsp.config.reader import Section


def lower_sections(sections: Sequence[Section]) -> list[Section]:
    """The primitive sections for ``sections``; plain Darknet cfgs pass through unchanged."""
    return list(sections)
