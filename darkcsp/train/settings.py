"""How a run's settings reach the cfg, and what the run will not do as the cfg says.

``--set SECTION.KEY=VALUE``, ``--classes`` and the [net] changes (batch, size,
max_batches...) edit the cfg's sections before the graph is built, so every value is checked
by the cfg's own option rules, and the run's cfg (in its checkpoints and as ``OUT/<name>.cfg``)
says what was trained.
"""
from __future__ import annotations

import re
from typing import Sequence

from darkcsp.config.reader import read_cfg
from darkcsp.errors import DarkcspError


def cfg_sections(cfg: str, overrides: Sequence[str] = (), **changes: object) -> list:
    """The cfg's sections with ``overrides`` applied, then some [net] keys replaced (batch,
    size...; ``None`` leaves a key as it is)."""
    sections = read_cfg(cfg)
    apply_overrides(sections, overrides)
    for key, value in changes.items():
        if value is not None:
            sections[0].set(key, value)
    return sections


_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_BAD_VALUE = re.compile(r"[\x00-\x20\x7f\[\]#]")  # would break the cfg line it is written to


def apply_overrides(sections: list, overrides: Sequence[str]) -> None:
    """Apply ``section.key=value`` settings (``--set``) to every section of that type
    (``net`` is the first section, ``[net]`` or ``[network]``); values are checked when the
    graph is built, with the cfg's own option rules."""
    for item in overrides:
        target, sep, value = item.partition("=")
        kind, dot, key = target.strip().partition(".")
        if not sep or not dot or not kind or not key.strip() or not value.strip():
            raise DarkcspError(f"--set {item!r}: expected SECTION.KEY=VALUE, e.g. net.adam=1 "
                               "or yolo.random=0")
        if not _NAME.match(kind.strip()) or not _NAME.match(key.strip()):
            raise DarkcspError(f"--set {item!r}: SECTION and KEY are names (letters, digits, "
                               "_), as in net.adam=1")
        if _BAD_VALUE.search(value.strip()):
            raise DarkcspError(f"--set {item!r}: the value must be one line of plain text "
                               "(no newline, blank, control character, '[', ']' or '#'), as a "
                               "cfg value is")
        kind = kind.strip()
        chosen = [sections[0]] if kind in ("net", "network") else \
            [s for s in sections[1:] if s.type == kind]
        if not chosen:
            raise DarkcspError(f"--set {item!r}: the cfg has no [{kind}] section")
        for section in chosen:
            section.set(key.strip(), value.strip())


UNSUPPORTED_NET = ("track", "dynamic_minibatch", "contrastive")


def schedule_warnings(net, detector: bool) -> list[str]:
    """What in ``[net]`` the run will not do as the cfg says: augmentations not implemented
    here, cutmix on a detector (Darknet ignores it too), steps that lie beyond max_batches."""
    found = [f"[net] {key}={getattr(net, key)} is not implemented; training without it"
             for key in UNSUPPORTED_NET if getattr(net, key)]
    if not detector:
        found += [f"[net] {key}=1 is not implemented for classifiers; training without it"
                  for key in ("mixup", "cutmix", "mosaic") if getattr(net, key)]
    elif net.cutmix and not net.mosaic:
        found.append("[net] cutmix=1 is for classifiers; Darknet ignores it for a detector, "
                     "and so does darkcsp")
    if net.policy == "steps" and net.steps and min(net.steps) >= net.max_batches:
        found.append(f"[net] steps={','.join(str(v) for v in net.steps)} all lie beyond "
                     f"max_batches {net.max_batches}: the learning rate never steps down "
                     "(Darknet advises steps at 80 % and 90 % of max_batches)")
    return found


HEAD_COORDS = {"yolo": 4, "Gaussian_yolo": 8, "region": 4}  # box entries before obj + classes


def set_classes(sections: list, classes: int) -> None:
    """Darknet's recipe for training a cfg on ``classes`` classes: ``classes=`` in every
    ``[yolo]`` and ``filters = len(mask) * (classes + 5)`` (``+ 9`` for ``[Gaussian_yolo]``;
    ``num * (classes + 5)`` for ``[region]``, which has no mask) in the ``[convolutional]``
    just before it, the layer that feeds it."""
    heads = [k for k in range(1, len(sections)) if sections[k].type in HEAD_COORDS]
    if not heads:
        raise DarkcspError("--classes: the cfg has no [yolo] layer")
    for k in heads:
        head, feeder = sections[k], sections[k - 1]
        if feeder.type != "convolutional":
            raise head.error("--classes: the section before this head is not a "
                             "[convolutional], so its filters cannot follow the classes",
                             "classes")
        mask = head.get("mask")
        try:
            anchors = len([v for v in mask.split(",") if v.strip()]) if mask else \
                int(head.get("num") or 1)
        except ValueError:
            raise head.error("--classes: num is not an integer", "num") from None
        head.set("classes", classes)
        feeder.set("filters", anchors * (classes + HEAD_COORDS[head.type] + 1))


def class_count(text: str) -> int:
    """``--classes N`` as a count >= 1 (``auto`` and ``cfg`` are handled by the caller)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise DarkcspError(f"--classes {text!r}: 'auto', 'cfg' or a class count >= 1")
    return value
