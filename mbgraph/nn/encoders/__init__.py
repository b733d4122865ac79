"""Encoders: initial embeddings + cached behavior operators -> (per-behavior) embeddings."""
from .base import BehaviorEmbeddings, MultiBehaviorEncoder
from .cascade import CascadeEncoder
from .cogcn import COGCNEncoder, PerBehaviorLightGCN
from .lightgcn import LightGCNEncoder
from .pkf import PKFEncoder

__all__ = ['BehaviorEmbeddings', 'MultiBehaviorEncoder', 'LightGCNEncoder', 'CascadeEncoder',
           'PKFEncoder', 'COGCNEncoder', 'PerBehaviorLightGCN']
