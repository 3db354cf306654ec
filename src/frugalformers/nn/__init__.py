"""Building blocks. Each takes plain tensors and returns plain tensors and is usable alone."""

from frugalformers.nn.attention import Attention, KVCache
from frugalformers.nn.ffn import FeedForward, activation_fn
from frugalformers.nn.norms import RMSNorm, make_norm
from frugalformers.nn.positions import (
    LearnedPositions,
    RelativePositionBias,
    RotaryEmbedding,
    apply_rotary,
    relative_position_bucket,
)

__all__ = [
    "Attention",
    "KVCache",
    "FeedForward",
    "activation_fn",
    "RMSNorm",
    "make_norm",
    "LearnedPositions",
    "RelativePositionBias",
    "RotaryEmbedding",
    "apply_rotary",
    "relative_position_bucket",
]
