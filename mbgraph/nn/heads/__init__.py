"""Multi-task heads: per-behavior embeddings -> per-behavior scores."""
from .base import MultiTaskHead, gather_pairs
from .bilinear import BilinearHead

__all__ = ['MultiTaskHead', 'BilinearHead', 'gather_pairs']
