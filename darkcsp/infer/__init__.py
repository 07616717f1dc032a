"""Inference as ``darknet detector test`` does it: Darknet's pre-processing, box decoding, NMS.

* :mod:`darkcsp.infer.preprocess`: stb-style image loading, Darknet's bilinear resize and
  letterbox, bit-exact with Darknet's network input.
* :mod:`darkcsp.infer.decode`: ``get_network_boxes`` for ``[yolo]``, ``[Gaussian_yolo]`` and
  ``[region]`` heads.
* :mod:`darkcsp.infer.nms`: ``do_nms_sort`` / ``diounms_sort``.
* :func:`detect_image`: all of it for one image, returning Darknet's printed detections.
"""
from darkcsp.infer.decode import get_network_boxes
from darkcsp.infer.detect_cli import (darknet_order, detect_image, detect_rows,
                                      detections_from_rows)
from darkcsp.infer.nms import apply_nms, drop_empty, nms_settings, nms_sort
from darkcsp.infer.preprocess import (ImageError, ImageMeta, darknet_resize, letterbox,
                                      load_image, prepare)

__all__ = ["get_network_boxes", "detect_image", "detect_rows", "darknet_order",
           "detections_from_rows", "apply_nms",
           "drop_empty", "nms_settings", "nms_sort", "ImageError", "ImageMeta", "darknet_resize",
           "letterbox", "load_image", "prepare"]
