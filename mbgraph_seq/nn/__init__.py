"""Layers of the sequence models: the EBM filter (FFT) layers, the SASRec causal
self-attention block and sequence embeddings, DPCPL's prompt generator."""
from .filter import BehaviorMinerLayer, ChunkedComplexMLP, EfficientFilterLayer, FeedForward
from .prompts import PromptGenerator, PromptOutput, coding_rate, compactness_loss
from .transformer import (CausalTransformer, MultiHeadSelfAttention, SASRecBlock,
                          SequenceEmbedding, causal_attention_mask)

__all__ = ['BehaviorMinerLayer', 'ChunkedComplexMLP', 'EfficientFilterLayer', 'FeedForward',
           'PromptGenerator', 'PromptOutput', 'coding_rate', 'compactness_loss',
           'CausalTransformer', 'MultiHeadSelfAttention', 'SASRecBlock', 'SequenceEmbedding',
           'causal_attention_mask']
