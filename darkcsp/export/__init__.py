"""Writing a built model for another engine: plain Darknet cfg + ``.weights``
(:mod:`~darkcsp.export.darknet`), OpenCV 4.x's Darknet importer (:mod:`~darkcsp.export.opencv`)
and ONNX (:mod:`~darkcsp.export.onnx`)."""
from __future__ import annotations

from pathlib import Path

from darkcsp.budget import AUTO, MaxMemory
from darkcsp.errors import CfgError
from darkcsp.export.darknet import export_darknet, lowered_cfg_text
from darkcsp.export.opencv import export_opencv, opencv_cfg_text
from darkcsp.files import output_file

TARGETS = ("darknet", "opencv")


def export_model(cfg: str | Path, weights: str | Path | None, out_dir: str | Path,
                 target: str = "darknet", max_memory: MaxMemory = AUTO) -> tuple[Path, Path]:
    """Write ``<name>.cfg`` and ``<name>.weights`` for ``target`` (darknet or opencv); neither
    may be one of the inputs (checked before any work)."""
    name = Path(cfg).stem
    inputs = [cfg] + ([weights] if weights is not None else [])
    for suffix in (".cfg", ".weights"):
        output_file(Path(out_dir) / f"{name}{suffix}", inputs)
    if target == "opencv":
        return export_opencv(cfg, weights, out_dir, max_memory)
    if target != "darknet":
        raise CfgError(f"unknown export target {target!r}; use one of {', '.join(TARGETS)}")
    return export_darknet(cfg, weights, out_dir, max_memory)


def cfg_text_for(cfg: str | Path, target: str = "darknet") -> str:
    """The lowered cfg text of ``cfg`` for ``target`` (what ``darkcsp lower`` writes)."""
    if target == "opencv":
        return opencv_cfg_text(cfg)
    if target != "darknet":
        raise CfgError(f"unknown lowering target {target!r}; use one of {', '.join(TARGETS)}")
    return lowered_cfg_text(cfg)


__all__ = ["TARGETS", "export_model", "cfg_text_for", "export_darknet", "export_opencv",
           "lowered_cfg_text", "opencv_cfg_text"]
