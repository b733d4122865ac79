"""Multi-task heads: per-behavior embeddings -> per-behavior scores."""
from .base import MultiTaskHead, gather_pairs
from .bilinear import BilinearHead
from .contrastive import BehaviorContrastive
from .dfme import DFMEHead
from .expert_fusion import ExpertFusionHead
from .mesi import MESIHead
from .mmoe import MMoEHead
from .ple import PLEHead
from .pme import PMEHead
from .shared_bottom import BehaviorMixture, SharedBottomHead, StackedMLP, pair_features

__all__ = ['MultiTaskHead', 'BilinearHead', 'gather_pairs', 'StackedMLP', 'BehaviorMixture',
           'pair_features', 'SharedBottomHead', 'MMoEHead', 'PLEHead', 'MESIHead', 'PMEHead',
           'DFMEHead', 'ExpertFusionHead', 'BehaviorContrastive']
