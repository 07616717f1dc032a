"""Errors and warnings raised by darkcsp.

Every problem in a cfg names the place it comes from (file:line, section, key) so that a user
with a 300-section file can jump straight to it; every problem with a weights file says how many
bytes were expected and found.
"""
from __future__ import annotations


class DarkcspError(Exception):
    """Base class of every error darkcsp raises on bad input."""


class CfgError(DarkcspError, ValueError):
    """A cfg file cannot be read or does not describe a valid network.

    The message always starts with ``file:line`` and names the section type and, where there is
    one, the key.
    """

    def __init__(self, message: str, *, source: str = "<cfg>", line: int = 0,
                 section: str | None = None, key: str | None = None) -> None:
        self.source = source
        self.line = line
        self.section = section
        self.key = key
        place = f"{source}:{line}"
        if section is not None:
            place += f" [{section}]"
        if key is not None:
            place += f" {key}"
        super().__init__(f"{place}: {message}")


class WeightsError(DarkcspError, ValueError):
    """A ``.weights`` (or ``.pt``) file does not fit the network it is loaded into."""


class CfgWarning(UserWarning):
    """Something in a cfg that Darknet accepts but that is probably not what the author meant."""
