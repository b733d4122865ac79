"""Layers of the sequence models: the EBM filter (FFT) layers and their self-attention
replacement, the SASRec causal self-attention block and sequence embeddings, DPCPL's prompt
generator."""
from .filter import (
    SEQUENCE_MIXERS,
    BehaviorMinerLayer,
    ChunkedComplexMLP,
    EfficientFilterLayer,
    FeedForward,
    SelfAttentionLayer,
)
from .prompts import PromptGenerator, PromptOutput, coding_rate, compactness_loss
from .transformer import (
    CausalTransformer,
    MultiHeadSelfAttention,
    SASRecBlock,
    SequenceEmbedding,
    bidirectional_attention_mask,
    causal_attention_mask,
)

__all__ = ['SEQUENCE_MIXERS', 'BehaviorMinerLayer', 'ChunkedComplexMLP', 'EfficientFilterLayer',
           'FeedForward', 'SelfAttentionLayer', 'PromptGenerator', 'PromptOutput',
           'coding_rate', 'compactness_loss', 'CausalTransformer', 'MultiHeadSelfAttention',
           'SASRecBlock', 'SequenceEmbedding', 'bidirectional_attention_mask',
           'causal_attention_mask']
