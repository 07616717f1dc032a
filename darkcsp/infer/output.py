"""Darknet's printed and drawn detections: the order ``draw_detections_v3`` prints boxes and
classes in, the ``-ext_output`` line, and the boxes drawn in Darknet's colours."""
from __future__ import annotations

import contextlib
import gc
import math
from typing import Any, Iterator, Sequence

import cv2
import numpy as np

F32 = np.float32


def darknet_order(rows: np.ndarray, thresh: float, names: Sequence[str] | None = None
                  ) -> list[tuple[int, list[int]]]:
    """What ``draw_detections_v3`` prints: (row, classes) pairs, rows sorted by the box's left
    edge, classes = the best class (highest probability > thresh whose name does not start with
    ``dont_show``; ties: the lowest class) then every other class > thresh in class order
    (Darknet does not filter ``dont_show`` there)."""
    rows = np.asarray(rows)
    if len(rows) == 0:
        return []
    t = F32(thresh)
    probs = rows[:, 5:]
    above = probs > t
    allowed = above
    if names is not None:
        hidden = [j for j, name in enumerate(names[:probs.shape[1]])
                  if name.startswith("dont_show")]
        if hidden:
            allowed = above.copy()
            allowed[:, hidden] = False
    has = allowed.any(axis=1)
    selected = np.flatnonzero(has)
    if len(selected) == 0:
        return []
    masked = np.where(allowed[selected], probs[selected], -np.inf)
    best = np.argmax(masked, axis=1)  # the first of equal maxima, as the strict ">" loop keeps
    lefts = rows[selected, 0].astype(F32) - rows[selected, 2].astype(F32) / F32(2)
    if np.isnan(lefts).any():  # Python's sort with NaN keys: keep its exact behaviour
        order = np.array(sorted(range(len(selected)), key=lambda k: lefts[k]), dtype=np.int64)
    else:
        order = np.argsort(lefts, kind="stable")
    selected, best = selected[order], best[order]
    others = above[selected]
    others[np.arange(len(selected)), best] = False
    counts = others.sum(axis=1)
    columns = np.nonzero(others)[1].tolist()
    result = []
    start = 0
    for i, b, count in zip(selected.tolist(), best.tolist(), counts.tolist()):
        result.append((i, [b, *columns[start:start + count]]))
        start += count
    return result


def _class_name(names: Sequence[str] | None, class_id: int) -> str:
    return names[class_id] if names is not None and class_id < len(names) else str(class_id)


def detections_from_rows(rows: np.ndarray, img_w: int, img_h: int, thresh: float,
                         names: Sequence[str] | None, path: str | None = None
                         ) -> list[dict[str, Any]]:
    """Rows after NMS -> :func:`detect_image`'s entries, in Darknet's printing order. Boxes are
    ``(x - w/2) * W`` ... in double from the float32 row values (numpy float64 arithmetic, the
    same IEEE operations as Python floats)."""
    order = darknet_order(rows, thresh, names)
    if not order:
        return []
    picked = np.array([i for i, _ in order], dtype=np.int64)
    x, y, w, h = (rows[picked, k].astype(np.float64) for k in range(4))
    boxes = np.stack([(x - w / 2) * img_w, (y - h / 2) * img_h, (x + w / 2) * img_w,
                      (y + h / 2) * img_h], axis=1).tolist()
    probs = rows[picked, 5:].astype(np.float64).tolist()
    entries = []
    with _without_cyclic_gc():
        for (_, classes), box, prob in zip(order, boxes, probs):
            for class_id in classes:
                entries.append({"image": path, "class_id": class_id,
                                "name": _class_name(names, class_id),
                                "prob": prob[class_id], "box": list(box)})
    return entries


@contextlib.contextmanager
def _without_cyclic_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while building many small dicts: they hold no
    cycles, but each collection rescans the growing list (an untrained head's 56,000 entries:
    172 ms with collections, 38 ms without). Restores the collector's previous state."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


# -- drawing ------------------------------------------------------------------------------------

_COLORS = ((1, 0, 1), (0, 0, 1), (0, 1, 1), (0, 1, 0), (1, 1, 0), (1, 0, 0))


def _darknet_color(channel: int, x: int, maximum: int) -> float:
    """Darknet's ``get_color``: a hue ramp over the classes."""
    ratio = float(F32(x) / F32(maximum) * F32(5))
    i, j = int(np.floor(ratio)), int(np.ceil(ratio))
    ratio -= i
    return (1 - ratio) * _COLORS[i][channel] + ratio * _COLORS[j][channel]


def draw_detections(image_rgb: np.ndarray, entries: Sequence[dict[str, Any]],
                    classes: int) -> np.ndarray:
    """A BGR uint8 copy of ``image_rgb`` (float 0..1) with the boxes and labels drawn like
    ``draw_detections_v3``: one box per detection in its best class's colour, labelled
    "name: 0.45[, other names]", the most probable drawn last."""
    bgr = np.ascontiguousarray(
        np.clip(np.round(image_rgb[:, :, ::-1] * 255), 0, 255).astype(np.uint8))
    if bgr.shape[2] == 1:
        bgr = np.ascontiguousarray(np.repeat(bgr, 3, axis=2))
    img_h, img_w = bgr.shape[:2]
    groups: list[list[dict[str, Any]]] = []
    for entry in entries:  # entries of one detection are adjacent, best class first
        if groups and entry["box"] == groups[-1][0]["box"]:
            groups[-1].append(entry)
        else:
            groups.append([entry])
    width = max(1, int(img_h * 0.002))
    font_scale = max(0.4, img_h * 0.02 / 22)
    for group in sorted(groups, key=lambda g: g[0]["prob"]):
        best = group[0]
        offset = best["class_id"] * 123457 % classes
        color = tuple(int(round(255 * _darknet_color(c, offset, classes))) for c in (0, 1, 2))
        x1, y1, x2, y2 = best["box"]
        left, right = max(int(x1), 0), min(int(x2), img_w - 1)
        top, bot = max(int(y1), 0), min(int(y2), img_h - 1)
        cv2.rectangle(bgr, (left, top), (right, bot), color, width)
        label = f"{best['name']}: {best['prob']:.2f}"
        if len(group) > 1:
            label += ", " + ", ".join(e["name"] for e in group[1:])
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
        y_text = max(top, th + base)
        cv2.rectangle(bgr, (left, y_text - th - base), (left + tw, y_text), color, -1)
        cv2.putText(bgr, label, (left, y_text - base), cv2.FONT_HERSHEY_SIMPLEX, font_scale,
                    (0, 0, 0), 1, cv2.LINE_AA)
    return bgr


# -- the command --------------------------------------------------------------------------------


def _c_round(value: float) -> float:
    """C's ``round``: halves away from zero (Python's ``round`` goes to even)."""
    return math.copysign(math.floor(abs(value) + 0.5), value)


def format_entry(entry: dict[str, Any]) -> str:
    """Darknet's ``-ext_output`` line for one detection and class."""
    x1, y1, x2, y2 = entry["box"]
    return (f"{entry['name']}: {entry['prob'] * 100:.0f}%\t(left_x: {_c_round(x1):4.0f}   "
            f"top_y: {_c_round(y1):4.0f}   width: {_c_round(x2 - x1):4.0f}   "
            f"height: {_c_round(y2 - y1):4.0f})")
