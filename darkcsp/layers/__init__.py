"""Every registered layer type; importing this package fills the registry."""
from darkcsp.layers import (activations, attention, connected, contrastive,  # noqa: F401
                            conv, dialect, heads, local, pool, resample, route, shortcut)
from darkcsp.layers.registry import (LayerType, Node, Shape, WeightBlock, layer_type, register,
                                     registered_types)

__all__ = ["LayerType", "Node", "Shape", "WeightBlock", "layer_type", "register",
           "registered_types"]
