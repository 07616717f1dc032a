"""darkcsp: Darknet cfg files as PyTorch models with Darknet's exact numbers, and back."""
from darkcsp.errors import CfgError, CfgWarning, DarkcspError, WeightsError
from darkcsp.graph import Graph
from darkcsp.infer.detector import Detector
from darkcsp.lower import build_graph
from darkcsp.network import Darknet

__version__ = "0.1.0"

__all__ = ["Darknet", "Graph", "build_graph", "CfgError", "CfgWarning", "DarkcspError",
           "WeightsError", "Detector", "evaluate", "train", "__version__"]


def __getattr__(name: str):
    """``darkcsp.evaluate`` and ``darkcsp.train``: subpackages that are also the functions
    behind ``darkcsp map`` and ``darkcsp train`` (:mod:`darkcsp.callable_package`), imported on
    first use."""
    if name in ("evaluate", "train"):
        import importlib
        return importlib.import_module(f"darkcsp.{name}")
    raise AttributeError(f"module 'darkcsp' has no attribute {name!r}")
