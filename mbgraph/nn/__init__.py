"""Neural network building blocks of mbgraph: the message-passing layer, the encoders and the
multi-task heads, importable from here as PyG's layers are from ``torch_geometric.nn``::

    from mbgraph.nn import BehaviorConv, COGCNEncoder, DFMEHead

The classes live in :mod:`mbgraph.nn.conv`, :mod:`mbgraph.nn.encoders` and
:mod:`mbgraph.nn.heads`, one idea a file; this module only re-exports them.
"""
from .conv import BehaviorConv
from .encoders import (
    BehaviorEmbeddings,
    CascadeEncoder,
    COGCNEncoder,
    CRGCNEncoder,
    LightGCNEncoder,
    MBCGCNEncoder,
    MultiBehaviorEncoder,
    PerBehaviorLightGCN,
    PKFEncoder,
)
from .heads import (
    BehaviorContrastive,
    BehaviorMixture,
    BilinearHead,
    DFMEHead,
    ExpertFusionHead,
    MESIHead,
    MMoEHead,
    MultiTaskHead,
    PLEHead,
    PMEHead,
    SharedBottomHead,
    StackedMLP,
)

__all__ = [
    # layer
    'BehaviorConv',
    # encoders and their base
    'MultiBehaviorEncoder', 'BehaviorEmbeddings', 'LightGCNEncoder', 'MBCGCNEncoder',
    'CRGCNEncoder', 'PKFEncoder', 'COGCNEncoder', 'PerBehaviorLightGCN',
    # the old single class of MB-CGCN and CRGCN (deprecated factory, and their shared base)
    'CascadeEncoder',
    # heads, their base and their shared blocks
    'MultiTaskHead', 'BilinearHead', 'SharedBottomHead', 'MMoEHead', 'PLEHead', 'MESIHead',
    'PMEHead', 'DFMEHead', 'ExpertFusionHead', 'StackedMLP', 'BehaviorMixture',
    'BehaviorContrastive',
]
