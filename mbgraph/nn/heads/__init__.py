"""Multi-task heads: per-behavior embeddings -> per-behavior scores."""
from .base import MultiTaskHead, gather_pairs
from .bilinear import BilinearHead
from .blocks import BehaviorMixture, MTLHead, StackedMLP, mix_experts, pair_features
from .contrastive import BehaviorContrastive
from .dfme import DFMEHead
from .expert_fusion import ExpertFusionHead
from .mesi import MESIHead
from .mmoe import MMoEHead
from .ple import PLEHead
from .pme import PMEHead
from .shared_bottom import SharedBottomHead

__all__ = ['MultiTaskHead', 'BilinearHead', 'gather_pairs', 'MTLHead', 'StackedMLP',
           'BehaviorMixture', 'pair_features', 'mix_experts', 'SharedBottomHead', 'MMoEHead',
           'PLEHead', 'MESIHead', 'PMEHead', 'DFMEHead', 'ExpertFusionHead',
           'BehaviorContrastive']
