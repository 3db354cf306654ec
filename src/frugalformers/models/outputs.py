"""Return types of the models: plain dataclasses of tensors."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class ModelOutput:
    """hidden: last hidden states (B, T, d). logits: head output. loss: scalar if labels were given
    (task loss only). aux_losses: name -> scalar from blocks that return them (MoE balance, z-loss),
    summed over layers; the trainer adds them with their own weights."""

    hidden: torch.Tensor
    logits: torch.Tensor | None = None
    loss: torch.Tensor | None = None
    pooled: torch.Tensor | None = None
    encoder_hidden: torch.Tensor | None = None
    aux_losses: dict[str, torch.Tensor] = field(default_factory=dict)


def add_aux(total: dict[str, torch.Tensor], new: dict[str, torch.Tensor]) -> None:
    for k, v in new.items():
        total[k] = total[k] + v if k in total else v
