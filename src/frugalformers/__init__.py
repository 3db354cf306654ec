"""frugalformers: Transformers that spend compute only where it pays.

FNet, Sparse Mixer, GQA, CoLT5 and MoWE on one small set of blocks. Start with
`build_model("bert-tiny")`, `save(model, dir)`, `load(dir)`; `frugal models` lists the presets.
"""

from frugalformers.api import build_model, count_parameters, list_presets
from frugalformers.checkpoint import CheckpointError, load, save
from frugalformers.config import ModelConfig

__version__ = "0.1.0"
__all__ = [
    "ModelConfig",
    "build_model",
    "count_parameters",
    "list_presets",
    "save",
    "load",
    "CheckpointError",
]
