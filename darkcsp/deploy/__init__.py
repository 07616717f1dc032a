"""Deployment: ONNX export, interchangeable inference backends (torch, OpenCV DNN, onnxruntime)
and the :class:`Detector` API, all sharing darkcsp's pre-processing, decode and NMS.

* :func:`export_onnx`: raw-head or decoded ONNX (the route to OpenCV 5.x and onnxruntime);
* :func:`make_backend`: a forward returning the heads in darkcsp's layout, whatever runs it;
* :class:`Detector`: ``detect`` / ``detect_batch`` / ``detect_folder`` / ``detect_video``.
"""
from darkcsp.deploy.backends import (BACKENDS, Backend, OnnxBackend, OpenCVBackend, TorchBackend,
                                     make_backend)
from darkcsp.deploy.detector import Detector, backend_rows
from darkcsp.deploy.onnx import export_onnx, output_names

__all__ = ["BACKENDS", "Backend", "OnnxBackend", "OpenCVBackend", "TorchBackend", "make_backend",
           "Detector", "backend_rows", "export_onnx", "output_names"]
