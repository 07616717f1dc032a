"""Darknet's cfg reading rules, with the file and line of every section and key kept.

Rules (from Darknet's ``read_cfg``/``option_list.c``):

* every space, tab and CR is removed from anywhere in a line (``layers = -1, 61`` is ``layers=-1,61``);
* a line starting with ``#`` or ``;`` is a comment, blank lines are skipped;
* ``[name]`` opens a section; ``key=value`` is split at the first ``=``;
* a key repeated inside a section: the **first** value wins (Darknet looks keys up from the front),
  with a :class:`CfgWarning`;
* an inline ``#`` comment after a value is cut off (Darknet's number parsers stop there too).
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

from darkcsp.errors import CfgError, CfgWarning
from darkcsp.files import FileRefused, regular_file

_WHITESPACE = str.maketrans("", "", " \t\r\n\v\f")


@dataclass(frozen=True)
class Entry:
    """One ``key=value`` line."""

    key: str
    value: str
    line: int


@dataclass
class Section:
    """One ``[type]`` block: its options keyed by name, in file order, first occurrence kept."""

    type: str
    line: int
    source: str = "<cfg>"
    entries: dict[str, Entry] = field(default_factory=dict)

    def get(self, key: str) -> str | None:
        entry = self.entries.get(key)
        return None if entry is None else entry.value

    def line_of(self, key: str | None) -> int:
        entry = self.entries.get(key) if key is not None else None
        return self.line if entry is None else entry.line

    def error(self, message: str, key: str | None = None) -> CfgError:
        """A :class:`CfgError` located at this section (and at ``key``'s line when it is set)."""
        return CfgError(message, source=self.source, line=self.line_of(key), section=self.type,
                        key=key)

    def warn(self, message: str, key: str | None = None) -> None:
        place = f"{self.source}:{self.line_of(key)} [{self.type}]" + (f" {key}" if key else "")
        warnings.warn(f"{place}: {message}", CfgWarning, stacklevel=3)

    def set(self, key: str, value: object, line: int | None = None) -> None:
        """Set ``key`` (used by code that writes sections, e.g. the dialect lowering)."""
        self.entries[key] = Entry(key, _format_value(value), self.line if line is None else line)

    def copy(self) -> "Section":
        return Section(self.type, self.line, self.source, dict(self.entries))

    def same_content(self, other: "Section") -> bool:
        """Equal type and key/values (ignoring lines), as a round trip through text must keep."""
        return (self.type == other.type and
                {k: e.value for k, e in self.entries.items()} ==
                {k: e.value for k, e in other.entries.items()})


def _format_value(value: object) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(_format_value(v) for v in value)
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    return str(value)


def parse_cfg(text: str, source: str = "<cfg>") -> list[Section]:
    """Split cfg text into sections. The first must be ``[net]`` or ``[network]``."""
    sections: list[Section] = []
    text = text[1:] if text.startswith("\ufeff") else text  # a UTF-8 BOM (Windows editors)
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.translate(_WHITESPACE)
        if not line or line[0] in "#;":
            continue
        if line[0] == "[":
            end = line.find("]")
            rest = line[end + 1:] if end >= 0 else ""
            if end < 2 or (rest and rest[0] not in "#;"):
                raise CfgError(f"malformed section header {raw.strip()!r}", source=source,
                               line=number)
            sections.append(Section(line[1:end], number, source))
            continue
        if not sections:
            raise CfgError(f"option {raw.strip()!r} before the first [section]", source=source,
                           line=number)
        section = sections[-1]
        key, sep, value = line.partition("=")
        hash_at = value.find("#")
        if hash_at >= 0:
            value = value[:hash_at]
        if not sep or not key:
            section_warn(section, number, f"line {raw.strip()!r} has no key=value; ignored")
            continue
        if not value:
            section_warn(section, number, f"{key!r} has an empty value; ignored (as Darknet does)")
            continue
        if key in section.entries:
            first = section.entries[key]
            section_warn(section, number, f"duplicate key {key!r}: the first value "
                         f"{first.value!r} (line {first.line}) is used, as in Darknet")
            continue
        section.entries[key] = Entry(key, value, number)
    if not sections:
        raise CfgError("no sections: a cfg starts with [net]", source=source, line=1)
    if sections[0].type not in ("net", "network"):
        raise CfgError("the first section must be [net] or [network]", source=source,
                       line=sections[0].line, section=sections[0].type)
    return sections


def section_warn(section: Section, line: int, message: str) -> None:
    warnings.warn(f"{section.source}:{line} [{section.type}]: {message}", CfgWarning,
                  stacklevel=3)


CfgSource = Union[str, os.PathLike]


def read_cfg(cfg: CfgSource) -> list[Section]:
    """Sections of a cfg given as a path or as cfg text (text is anything containing a newline
    or a ``[``)."""
    if isinstance(cfg, os.PathLike) or ("\n" not in cfg and "[" not in cfg):
        path = Path(cfg)
        try:
            if os.path.lexists(path):  # (a missing file: the OSError below says so)
                regular_file(path, "cfg file")  # a fifo would hang the reader
        except FileRefused as exc:
            raise CfgError(f"cannot read cfg file: {exc}", source=str(path), line=0) from None
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise CfgError(f"cannot read cfg file: {exc.strerror or exc}", source=str(path),
                           line=0) from exc
        return parse_cfg(text, str(path))
    return parse_cfg(cfg, "<cfg text>")
