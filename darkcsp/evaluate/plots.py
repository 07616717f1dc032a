"""Precision-recall curves as PNG files, one per class plus an overview.

Why an Agg ``Figure`` rather than ``pyplot``: it needs no display, leaves the process-wide
matplotlib backend alone (the CLI may run inside a notebook or a training loop) and frees each
figure as soon as it is saved.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from darkcsp.evaluate.darknet_map import DarknetMapResult, PRCurve


def _envelope(curve: PRCurve) -> tuple[np.ndarray, np.ndarray]:
    """The monotone (max-to-the-right) precision envelope Darknet's ``-points 0`` integrates."""
    if len(curve.precision) == 0:
        return np.zeros(0), np.zeros(0)
    env = np.maximum.accumulate(curve.precision[::-1])[::-1]
    return np.concatenate([[0.0], curve.recall]), np.concatenate([[env[0]], env])


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "class"


def plot_pr_curves(result: DarknetMapResult, names: Sequence[str] | None,
                   out_dir: str | os.PathLike, dpi: int = 100) -> list[Path]:
    """Write ``pr_<index>_<name>.png`` per class and ``pr_all.png``; return the paths."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = list(names) if names is not None else [str(i) for i in range(result.classes)]
    written: list[Path] = []

    overview = Figure(figsize=(7, 6))
    FigureCanvasAgg(overview)
    ax_all = overview.add_subplot()
    for k, curve in enumerate(result.curves):
        fig = Figure(figsize=(6, 5))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        if len(curve.recall):
            ax.plot(curve.recall, curve.precision, lw=1, alpha=0.6, label="precision")
            env_r, env_p = _envelope(curve)
            ax.step(env_r, env_p, where="pre", lw=1.5, label="envelope")
            ax_all.plot(curve.recall, curve.precision, lw=1)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_title(f"{names[k]}: AP = {result.ap[k] * 100:.2f}% "
                     f"({int(result.truth_count[k])} truths, "
                     f"{int(result.detection_count[k])} detections)")
        ax.grid(True, alpha=0.3)
        if len(curve.recall):
            ax.legend(loc="lower left")
        path = out / f"pr_{k:03d}_{_safe_name(names[k])}.png"
        fig.savefig(path, dpi=dpi)
        written.append(path)
    ax_all.set_xlim(0, 1)
    ax_all.set_ylim(0, 1.02)
    ax_all.set_xlabel("recall")
    ax_all.set_ylabel("precision")
    label = "AUC" if result.points == 0 else f"{result.points} points"
    ax_all.set_title(f"mAP@{result.iou_thresh:.2f} ({label}) = {result.map * 100:.2f}%")
    ax_all.grid(True, alpha=0.3)
    path = out / "pr_all.png"
    overview.savefig(path, dpi=dpi)
    written.append(path)
    return written
