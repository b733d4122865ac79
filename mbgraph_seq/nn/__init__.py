"""Layers of the sequence models: the EBM filter (FFT) layers, their self-attention
replacement and their causal stand-in, the SASRec causal self-attention block and sequence
embeddings, DPCPL's prompt generator."""
from .filter import (
    CAUSAL_MIXERS,
    SEQUENCE_MIXERS,
    BehaviorMinerLayer,
    CausalFilterLayer,
    CausalKernel,
    ChunkedComplexMLP,
    ChunkedMLP,
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

__all__ = ['SEQUENCE_MIXERS', 'CAUSAL_MIXERS', 'BehaviorMinerLayer', 'CausalFilterLayer',
           'CausalKernel', 'ChunkedComplexMLP', 'ChunkedMLP', 'EfficientFilterLayer',
           'FeedForward', 'SelfAttentionLayer', 'PromptGenerator', 'PromptOutput',
           'coding_rate', 'compactness_loss', 'CausalTransformer', 'MultiHeadSelfAttention',
           'SASRecBlock', 'SequenceEmbedding', 'bidirectional_attention_mask',
           'causal_attention_mask']
