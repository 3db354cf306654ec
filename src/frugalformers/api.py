"""The Python entry points: `build_model`, `save`, `load`, `list_presets`."""

from __future__ import annotations

import torch
from torch import nn

from frugalformers.config import ModelConfig
from frugalformers.models import MODEL_CLASSES
from frugalformers.presets import PRESETS, get_preset


def resolve_config(name_or_config: str | ModelConfig | dict, **overrides) -> ModelConfig:
    if isinstance(name_or_config, str):
        config = get_preset(name_or_config)
    elif isinstance(name_or_config, dict):
        config = ModelConfig.from_dict(name_or_config)
    elif isinstance(name_or_config, ModelConfig):
        config = name_or_config
    else:
        raise ValueError(
            f"build_model takes a preset name, a ModelConfig or a dict, not {type(name_or_config).__name__}"
        )
    return config.replace(**overrides) if overrides else config


def build_model(name_or_config: str | ModelConfig | dict, **overrides) -> nn.Module:
    """Build a model from a preset name (see `frugal models`), a config, or a config dict.

    `overrides` replace config fields, e.g. `build_model("bert-base", head="classify", num_labels=3)`.
    Build under `torch.device("meta")` to count parameters without allocating.
    """

    config = resolve_config(name_or_config, **overrides)
    return MODEL_CLASSES[(config.family, config.head)](config)


def list_presets() -> list[str]:
    return list(PRESETS)


def count_parameters(model: nn.Module) -> int:
    """Parameters, counting shared tensors once."""
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def example_inputs(config: ModelConfig, batch: int, seq_len: int, device=None) -> dict[str, torch.Tensor]:
    """Random token inputs of the right kind for the model's forward."""
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, config.vocab_size, (batch, seq_len), generator=gen)
    if device is not None and torch.device(device).type != "meta":
        ids = ids.to(device)
    elif device is not None:
        ids = torch.empty((batch, seq_len), dtype=torch.long, device="meta")
    if config.family == "t5" and config.head != "encoder":
        return {"input_ids": ids, "decoder_input_ids": ids}
    return {"input_ids": ids}
