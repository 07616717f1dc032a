"""Boxes from detection-head outputs, as Darknet's ``get_network_boxes`` makes them.

Rows are ``[x, y, w, h, objectness, prob_0 .. prob_{C-1}]``, box centre and size relative to the
image (0..1 inside it), in Darknet's order: heads in layer order, then cells row-major, then
anchors. The arithmetic follows the C code's types (float32, with ``exp`` and the letterbox
correction in double) so that rows compare with Darknet's at the float32 level and a probability
at the threshold falls on the same side.

* ``[yolo]`` (``get_yolo_detections``): a cell/anchor is kept when objectness > thresh;
  ``prob_c = obj * cls_c``, zeroed unless > thresh. ``w = exp(tw) * anchor_w / net_w``
  (``new_coords=1``: ``tw^2 * 4 * anchor_w / net_w``).
* ``[Gaussian_yolo]``: the same with ``prob_c = obj * cls_c * (1 - mean sigma)`` and
  ``yolo_point``.
* ``[region]`` (``custom_get_region_detections``): every cell/anchor is a row with objectness 1;
  x, y get their logistic here; anchors are in grid cells; ``prob_c = obj * cls_c`` zeroed
  unless > thresh.
* ``correct_yolo_boxes``: undo the letterbox (integer letterbox size) when ``letterbox``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from darkcsp.errors import DarkcspError
from darkcsp.infer.preprocess import letterbox_size
from darkcsp.layers.heads import RegionHead, YoloHead

F32 = np.float32


def _np(t: torch.Tensor | np.ndarray) -> np.ndarray:
    """One image's head output as float32 numpy (a leading batch dimension of 1 is dropped)."""
    if isinstance(t, torch.Tensor):
        t = t.detach().to("cpu", torch.float32).numpy()
    arr = np.asarray(t, dtype=F32)
    if arr.ndim == 4:
        if arr.shape[0] != 1:
            raise ValueError(f"decode one image at a time (got a batch of {arr.shape[0]})")
        arr = arr[0]
    return arr


def _prob_rows(obj: np.ndarray, cls: np.ndarray, thresh: float) -> np.ndarray:
    """``prob = obj * cls`` in float32, zeroed unless > thresh (Darknet compares floats)."""
    prob = (obj[:, None] * cls).astype(F32)
    return np.where(prob > F32(thresh), prob, F32(0)).astype(F32)


def yolo_detections(head: YoloHead, output: torch.Tensor | np.ndarray, net_w: int, net_h: int,
                    thresh: float, yolo_point: str = "center") -> np.ndarray:
    """Rows of one ``[yolo]``/``[Gaussian_yolo]`` head (before letterbox correction).

    ``output`` is the head's output for one image, ``(anchors*entries, H, W)`` (Darknet's
    ``l.output``), activations applied.
    """
    out = _np(output)
    if out.ndim != 3:
        raise ValueError(f"unexpected [yolo] output shape {out.shape}")
    n_anchors = len(head.anchors)
    entries = head.entries
    _, lh, lw = out.shape
    # (anchor, entry, H*W) -> (H*W, anchor, entry): Darknet's loop order (cells, then anchors)
    t = out.reshape(n_anchors, entries, lh * lw).transpose(2, 0, 1)
    gauss = head.gaussian
    obj = t[:, :, 8 if gauss else 4]
    cell, anchor = np.nonzero(obj > F32(thresh))
    row, col = cell // lw, cell % lw
    e = t[cell, anchor]  # (N, entries)
    aw = np.array([a[0] for a in head.anchors], dtype=F32)[anchor].astype(np.float64)
    ah = np.array([a[1] for a in head.anchors], dtype=F32)[anchor].astype(np.float64)
    ix, iy, iw, ih = (0, 2, 4, 6) if gauss else (0, 1, 2, 3)
    x = (col.astype(F32) + e[:, ix]) / F32(lw)
    y = (row.astype(F32) + e[:, iy]) / F32(lh)
    if head.new_coords and not gauss:
        w = e[:, iw] * e[:, iw] * F32(4) * aw.astype(F32) / F32(net_w)
        h = e[:, ih] * e[:, ih] * F32(4) * ah.astype(F32) / F32(net_h)
    else:  # exp() of a float is computed in double by the C code (inf stays inf, as there)
        with np.errstate(over="ignore"):
            w = (np.exp(e[:, iw].astype(np.float64)) * aw / net_w).astype(F32)
            h = (np.exp(e[:, ih].astype(np.float64)) * ah / net_h).astype(F32)
    if gauss and yolo_point != "center":
        sign = F32(1) if yolo_point == "left_top" else F32(-1)
        x = x + sign * (w / F32(2))
        y = y + sign * (h / F32(2))
    objectness = obj[cell, anchor]
    cls = e[:, entries - head.classes:]
    if gauss:
        uc = e[:, [1, 3, 5, 7]]
        uc_aver = (((uc[:, 0] + uc[:, 1]) + uc[:, 2]) + uc[:, 3]).astype(np.float64) / 4.0
        prob = ((objectness[:, None] * cls).astype(np.float64)
                * (1.0 - uc_aver.astype(F32).astype(np.float64))[:, None]).astype(F32)
        probs = np.where(prob > F32(thresh), prob, F32(0)).astype(F32)
    else:
        probs = _prob_rows(objectness, cls, thresh)
    boxes = np.stack([x, y, w, h, objectness], axis=1).astype(F32)
    return np.concatenate([boxes, probs], axis=1)


def _logistic(x: np.ndarray) -> np.ndarray:
    """``1.f/(1.f + expf(-x))`` in float32."""
    with np.errstate(over="ignore"):
        return (F32(1) / (F32(1) + np.exp(-x.astype(F32)))).astype(F32)


def region_detections(head: RegionHead, output: torch.Tensor | np.ndarray, thresh: float,
                      grid: tuple[int, int] | None = None, classfix: int = 0) -> np.ndarray:
    """Rows of one ``[region]`` head: every cell and anchor (objectness 1), probabilities
    thresholded. ``output`` is ``(H*W, num, coords+1+classes)`` as RegionHead returns it;
    ``grid`` is its (W, H) (the flat layout loses it; square when not given)."""
    out = _np(output)
    if out.ndim != 3:
        raise ValueError(f"unexpected [region] output shape {out.shape}")
    cells, num, _ = out.shape
    lw, lh = _region_grid(cells, grid)
    cell = np.repeat(np.arange(cells), num)
    anchor = np.tile(np.arange(num), cells)
    e = out.reshape(cells * num, -1)
    row, col = cell // lw, cell % lw
    x = (col.astype(F32) + _logistic(e[:, 0])) / F32(lw)
    y = (row.astype(F32) + _logistic(e[:, 1])) / F32(lh)
    aw = np.array([a[0] for a in head.anchors], dtype=F32)[anchor].astype(np.float64)
    ah = np.array([a[1] for a in head.anchors], dtype=F32)[anchor].astype(np.float64)
    with np.errstate(over="ignore"):
        w = (np.exp(e[:, 2].astype(np.float64)) * aw / lw).astype(F32)
        h = (np.exp(e[:, 3].astype(np.float64)) * ah / lh).astype(F32)
    scale = e[:, 4]
    if classfix == -1:
        scale = np.where(scale < F32(0.5), F32(0), scale).astype(F32)
    probs = _prob_rows(scale, e[:, 5:5 + head.classes], thresh)
    ones = np.ones_like(x)
    return np.concatenate([np.stack([x, y, w, h, ones], axis=1), probs], axis=1).astype(F32)


def _region_grid(cells: int, grid: tuple[int, int] | None) -> tuple[int, int]:
    """(W, H) of a region head's grid: ``grid`` when given, else the square one."""
    if grid is not None:
        if grid[0] * grid[1] != cells:
            raise ValueError(f"grid {grid} does not hold {cells} cells")
        return grid
    side = int(round(cells ** 0.5))
    if side * side != cells:
        raise ValueError(f"a [region] output with {cells} cells is not square; pass grid=(W, H)")
    return side, side


def correct_boxes(rows: np.ndarray, img_w: int, img_h: int, net_w: int, net_h: int,
                  letterbox: bool, gaussian: bool = False) -> np.ndarray:
    """Darknet's ``correct_yolo_boxes`` (``gaussian``: ``correct_gaussian_yolo_boxes``, which
    rounds the size factor slightly differently): map boxes from the letterboxed network input
    back to the image. Without letterbox the boxes are already relative to the image."""
    if not letterbox or len(rows) == 0:
        return rows
    new_w, new_h = letterbox_size(img_w, img_h, net_w, net_h)
    out = rows.copy()
    ratiow = F32(new_w) / F32(net_w)
    ratioh = F32(new_h) / F32(net_h)
    out[:, 0] = ((rows[:, 0].astype(np.float64) - (net_w - new_w) / 2.0 / net_w)
                 / float(ratiow)).astype(F32)
    out[:, 1] = ((rows[:, 1].astype(np.float64) - (net_h - new_h) / 2.0 / net_h)
                 / float(ratioh)).astype(F32)
    if gaussian:
        fw, fh = F32(net_w) / F32(new_w), F32(net_h) / F32(new_h)
    else:
        fw, fh = F32(1) / ratiow, F32(1) / ratioh
    out[:, 2] = rows[:, 2] * fw
    out[:, 3] = rows[:, 3] * fh
    return out


def detection_heads(model: torch.nn.Module) -> list[tuple[int, torch.nn.Module]]:
    """(layer index, module) of every ``[yolo]``/``[Gaussian_yolo]``/``[region]`` head."""
    heads = [(i, model.layers[i]) for i in model.output_indices
             if isinstance(model.layers[i], (YoloHead, RegionHead))]
    if not heads:
        raise DarkcspError("the network has no [yolo], [Gaussian_yolo] or [region] layer to "
                           "decode boxes from")
    return heads


def get_network_boxes(model: torch.nn.Module, outputs: Sequence[torch.Tensor | np.ndarray],
                      img_w: int, img_h: int, thresh: float = 0.25, letterbox: bool = False,
                      ) -> np.ndarray:
    """Darknet's ``get_network_boxes(net, img_w, img_h, thresh, hier, 0, relative=1, &n,
    letterbox)`` for one image: float32 rows ``[x, y, w, h, obj, probs...]``.

    ``outputs`` are ``model(x)`` for that image, one per ``model.output_indices`` (a leading
    batch dimension of 1 is allowed). ``hier_thresh`` only matters for YOLO9000 trees, which
    darkcsp does not support, so it is not a parameter.
    """
    net_w, net_h = int(model.net.width), int(model.net.height)
    by_index = dict(zip(model.output_indices, outputs))
    parts: list[np.ndarray] = []
    classes: int | None = None
    for index, head in detection_heads(model):
        node = model.nodes[index]
        if classes is None:
            classes = head.classes
        elif head.classes != classes:
            raise DarkcspError(f"detection layers have different class counts ({classes} and "
                               f"{head.classes} in layer {index}); check the cfg")
        output = by_index[index]
        if isinstance(head, RegionHead):
            if node.opts.get("tree"):
                raise DarkcspError(f"layer {index}: [region] tree= (YOLO9000 hierarchical "
                                   "softmax) is not supported")
            rows = region_detections(head, output, thresh, (node.out_shape.w, node.out_shape.h),
                                     int(node.opts.get("classfix", 0)))
            gaussian = False
        else:
            rows = yolo_detections(head, output, net_w, net_h, thresh,
                                   str(node.opts.get("yolo_point", "center")))
            gaussian = head.gaussian
        parts.append(correct_boxes(rows, img_w, img_h, net_w, net_h, letterbox, gaussian))
    assert classes is not None
    if not parts:
        return np.zeros((0, 5 + classes), dtype=F32)
    return np.concatenate(parts, axis=0).astype(F32, copy=False)


__all__ = ["yolo_detections", "region_detections", "correct_boxes", "detection_heads",
           "get_network_boxes"]
