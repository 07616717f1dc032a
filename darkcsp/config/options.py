"""Typed layer options with Darknet's defaults, declared once per layer type.

A layer type lists its :class:`Option` s; :func:`parse_options` turns a section's strings into an
:class:`OptionValues`, raising :class:`CfgError` (file:line, section, key) on a bad value or a
missing required key and warning once about every key nobody declared.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

from darkcsp.config.reader import Section

Default = Any  # a value, or a callable taking the values parsed so far (e.g. size = stride)

KINDS = ("int", "float", "str", "ints", "floats")
INT_MIN, INT_MAX = -2 ** 31, 2 ** 31 - 1  # Darknet's atoi gives a C int

# What C's atoi and atof read: leading blanks, then the longest numeric prefix; the rest of the
# text is ignored. Darknet (and OpenCV's importer) read every option that way, so ``1e1`` is the
# integer 1 and ``1_6`` is 1 there, whatever Python's int()/float() would say.
_ATOI_PREFIX = re.compile(r"\s*([+-]?\d+)")
_ATOF_PREFIX = re.compile(r"\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)")
_ATOF_SPECIAL = re.compile(r"\s*([+-]?(?:inf(?:inity)?|nan))", re.IGNORECASE)


def c_number_prefix(text: str, kind: str) -> tuple[str, str] | None:
    """(numeric prefix, ignored rest) of ``text`` as C's atoi (``kind="int"``) or atof reads
    it, or None when it starts with no number at all."""
    if kind == "int":
        match = _ATOI_PREFIX.match(text)
    else:
        match = _ATOF_PREFIX.match(text) or _ATOF_SPECIAL.match(text)
    if match is None:
        return None
    return match.group(1), text[match.end():]


@dataclass(frozen=True)
class Option:
    """One cfg key: its type, Darknet's default and its allowed range."""

    name: str
    kind: str
    default: Default = None
    required: bool = False
    choices: tuple[str, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    doc: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise TypeError(f"option {self.name}: unknown kind {self.kind!r}")

    def parse(self, text: str, section: Section) -> Any:
        if self.kind in ("ints", "floats"):
            scalar = "int" if self.kind == "ints" else "float"
            items = [item for item in text.split(",") if item]
            if not items:
                raise section.error(f"expected a comma-separated list of {scalar}s, got {text!r}",
                                    self.name)
            values = [self._scalar(scalar, item, section) for item in items]
            for value in values:
                self._check_range(value, section)
            return values
        value = self._scalar(self.kind, text, section)
        if self.choices is not None and value not in self.choices:
            raise section.error(f"{value!r} is not one of {', '.join(self.choices)}", self.name)
        self._check_range(value, section)
        return value

    def _scalar(self, kind: str, text: str, section: Section) -> Any:
        if kind == "str":
            return text
        parsed = c_number_prefix(text, kind)
        if parsed is None:
            raise section.error(f"expected {'an integer' if kind == 'int' else 'a number'}, "
                                f"got {text!r}", self.name)
        prefix, rest = parsed
        if len(prefix) > 40:  # far past any C int or double; Python's int() refuses > 4300 digits
            raise section.error(f"{prefix[:20]}... ({len(prefix)} characters) is out of range",
                                self.name)
        if rest.strip():
            section.warn(f"{text!r} is read as {prefix} (Darknet and OpenCV read numbers with C's "
                         f"{'atoi' if kind == 'int' else 'atof'}, which stops at {rest!r})",
                         self.name)
        if kind == "int":
            value = int(prefix)
            if not INT_MIN <= value <= INT_MAX:
                raise section.error(f"{text} is out of range: Darknet reads integers as 32-bit "
                                    "C ints", self.name)
            return value
        number = float(prefix)
        if not math.isfinite(number):
            raise section.error(f"expected a finite number, got {text!r}", self.name)
        return number

    def _check_range(self, value: Any, section: Section) -> None:
        if isinstance(value, str):
            return
        if self.minimum is not None and value < self.minimum:
            raise section.error(f"{value} is below the minimum {self.minimum:g}", self.name)
        if self.maximum is not None and value > self.maximum:
            raise section.error(f"{value} is above the maximum {self.maximum:g}", self.name)


class OptionValues(dict):
    """Parsed options; read as ``values.filters`` or ``values["filters"]``.

    ``given`` holds the keys the cfg wrote explicitly (the rest are defaults).
    """

    given: frozenset[str]

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


# Keys Darknet reads for every layer (parser.c), accepted everywhere.
COMMON_OPTIONS: tuple[Option, ...] = (
    Option("clip", "float", 0.0),
    Option("onlyforward", "int", 0),
    Option("dont_update", "int", 0),
    Option("burnin_update", "int", 0),
    Option("stopbackward", "int", 0),
    Option("train_only_bn", "int", 0),
    Option("dontload", "int", 0, doc="skip this layer when loading weights"),
    Option("dontloadscales", "int", 0,
           doc="skip the BN scales/mean/variance when loading (Darknet still saves them)"),
    Option("learning_rate", "float", 1.0, doc="per-layer learning-rate multiplier"),
    Option("stream", "int", -1),
    Option("wait_stream", "int", -1),
)


def parse_options(section: Section, options: Sequence[Option],
                  extra_known: Iterable[str] = ()) -> OptionValues:
    """Typed values for ``options`` from ``section``; warns about undeclared keys."""
    values = OptionValues()
    for option in (*options, *COMMON_OPTIONS):
        if option.name in values:
            continue
        text = section.get(option.name)
        if text is None:
            if option.required:
                raise section.error("required option is missing", option.name)
            default = option.default
            values[option.name] = default(values) if callable(default) else default
        else:
            values[option.name] = option.parse(text, section)
    known = set(values) | set(extra_known)
    for key in section.entries:
        if key not in known:
            section.warn(f"unknown key {key!r} ignored", key)
    values.given = frozenset(k for k in section.entries if k in values)
    return values


def parse_activation_name(section: Section, key: str, default: str,
                          known: Iterable[str]) -> str:
    """An activation name; unlike Darknet (which silently uses relu) an unknown name is an error."""
    name = section.get(key) or default
    if name not in known:
        raise section.error(f"unknown activation {name!r} (known: {', '.join(sorted(known))})",
                            key)
    return name


Validator = Callable[[OptionValues, Section], None]
