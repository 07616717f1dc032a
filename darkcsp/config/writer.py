"""Sections back to cfg text; reading the text gives the same sections."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from darkcsp.config.reader import Section


def format_cfg(sections: Iterable[Section], header: str | None = None) -> str:
    """Cfg text for ``sections``: one ``[type]`` line, its ``key=value`` lines, a blank line.

    No inline comments and no whitespace inside values, so Darknet and OpenCV read it alike.
    """
    lines: list[str] = []
    if header:
        lines += [f"# {text}" for text in header.splitlines()] + [""]
    for section in sections:
        lines.append(f"[{section.type}]")
        lines += [f"{entry.key}={entry.value}" for entry in section.entries.values()]
        lines.append("")
    return "\n".join(lines)


def write_cfg(sections: Iterable[Section], path: str | os.PathLike, header: str | None = None
              ) -> None:
    Path(path).write_text(format_cfg(sections, header), encoding="utf-8")
