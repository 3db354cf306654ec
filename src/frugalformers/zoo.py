"""The model-zoo table: every preset with its shape, parameters and counted forward FLOPs per token."""

from __future__ import annotations

import torch

from frugalformers.api import build_model, count_parameters
from frugalformers.bench.flops import flops_per_token
from frugalformers.bench.report import format_table
from frugalformers.presets import DESCRIPTIONS, PRESETS, get_preset


def zoo_rows(names: list[str] | None = None, seq_len: int = 512) -> list[dict]:
    rows = []
    for name in names or list(PRESETS):
        config = get_preset(name)
        with torch.device("meta"):
            model = build_model(config)
        T = min(seq_len, config.max_seq_len)
        heads = f"{config.n_heads}/{config.encoder_kv_heads}"
        if config.family == "t5":
            heads += f" dec {config.n_heads}/{config.kv_heads}"
        rows.append(
            {
                "preset": name,
                "family": config.family,
                "layers": config.n_layers if config.family != "t5" else f"{config.n_layers}+{config.decoder_layers}",
                "d_model": config.d_model,
                "heads q/kv": heads,
                "d_ff": config.d_ff,
                "params (M)": count_parameters(model) / 1e6,
                "seq": T,
                "fwd GFLOP/token": flops_per_token(config, T, model=model) / 1e9,
                "description": DESCRIPTIONS[name],
            }
        )
    return rows


def zoo_table(names: list[str] | None = None, seq_len: int = 512) -> str:
    return format_table(zoo_rows(names, seq_len))
