"""Every registered layer type; importing this package fills the registry."""
from darkcsp.layers import (activations, attention, connected, conv, dialect,  # noqa: F401
                            heads, local, pool, resample, route, shortcut)
from darkcsp.layers.registry import (LayerType, Node, Shape, WeightBlock, layer_type, register,
                                     registered_types)

__all__ = ["LayerType", "Node", "Shape", "WeightBlock", "layer_type", "register",
           "registered_types"]
