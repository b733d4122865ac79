"""Encoders: initial embeddings + cached behavior operators -> (per-behavior) embeddings."""
from .base import BehaviorEmbeddings, MultiBehaviorEncoder
from .lightgcn import LightGCNEncoder

__all__ = ['BehaviorEmbeddings', 'MultiBehaviorEncoder', 'LightGCNEncoder']
