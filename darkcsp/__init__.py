"""darkcsp: Darknet cfg files as PyTorch models with Darknet's exact numbers, and back."""
from darkcsp.errors import CfgError, CfgWarning, DarkcspError, WeightsError
from darkcsp.graph import Graph
from darkcsp.lower import build_graph
from darkcsp.network import Darknet
from darkcsp.infer.detector import Detector

__version__ = "0.1.0"

__all__ = ["Darknet", "Graph", "build_graph", "CfgError", "CfgWarning", "DarkcspError",
           "WeightsError", "Detector", "__version__"]
