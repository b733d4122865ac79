"""Encoders: initial embeddings + cached behavior operators -> (per-behavior) embeddings."""
from .base import BehaviorEmbeddings, MultiBehaviorEncoder, PerBehaviorEncoder
from .cascade import CascadeEncoder
from .cogcn import COGCNEncoder, PerBehaviorLightGCN
from .crgcn import CRGCNEncoder
from .lightgcn import LightGCNEncoder
from .mbcgcn import MBCGCNEncoder
from .pkf import PKFEncoder

__all__ = ['BehaviorEmbeddings', 'MultiBehaviorEncoder', 'PerBehaviorEncoder', 'LightGCNEncoder',
           'MBCGCNEncoder', 'CRGCNEncoder', 'CascadeEncoder', 'PKFEncoder', 'COGCNEncoder',
           'PerBehaviorLightGCN']
