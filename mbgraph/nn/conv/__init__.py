"""Message-passing layers of mbgraph, PyG style, one per file."""
from .behavior_conv import BehaviorConv

__all__ = ['BehaviorConv']
