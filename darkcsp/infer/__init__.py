"""Inference as ``darknet detector test`` does it, on any backend.

* :mod:`~darkcsp.infer.preprocess`: stb-style image loading, Darknet's bilinear resize and
  letterbox, bit-exact with Darknet's network input.
* :mod:`~darkcsp.infer.decode`: ``get_network_boxes`` for ``[yolo]``, ``[Gaussian_yolo]`` and
  ``[region]`` heads.
* :mod:`~darkcsp.infer.nms`: ``do_nms_sort`` / ``diounms_sort``.
* :mod:`~darkcsp.infer.output`: Darknet's printing order, ``-ext_output`` lines, drawn boxes.
* :mod:`~darkcsp.infer.backends`: the network forward on torch, OpenCV DNN or onnxruntime.
* :mod:`~darkcsp.infer.detector`: :class:`Detector`, the one detection pipeline (behind
  ``darkcsp detect``, :func:`detect_image` and :func:`detect_rows`).
"""
from darkcsp.infer.backends import (BACKENDS, Backend, ModuleBackend, OnnxBackend, OpenCVBackend,
                                    TorchBackend, make_backend)
from darkcsp.infer.decode import get_network_boxes
from darkcsp.infer.detector import Detector, detect_image, detect_rows
from darkcsp.infer.nms import apply_nms, drop_empty, nms_settings, nms_sort
from darkcsp.infer.output import darknet_order, detections_from_rows
from darkcsp.infer.preprocess import (ImageError, ImageMeta, darknet_resize, letterbox,
                                      load_image, load_image_bytes, prepare)

__all__ = ["BACKENDS", "Backend", "ModuleBackend", "OnnxBackend", "OpenCVBackend", "TorchBackend",
           "make_backend", "Detector", "get_network_boxes", "detect_image", "detect_rows",
           "darknet_order", "detections_from_rows", "apply_nms", "drop_empty", "nms_settings",
           "nms_sort", "ImageError", "ImageMeta", "darknet_resize", "letterbox", "load_image",
           "load_image_bytes", "prepare"]
