"""Decoder-only causal LM, Llama style: RMSNorm pre-norm, rotary positions, SwiGLU, GQA."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from frugalformers.config import ModelConfig
from frugalformers.models.decoding import attach_caches, detach_caches
from frugalformers.models.layers import PreNormLayer
from frugalformers.models.outputs import ModelOutput, add_aux
from frugalformers.models.recipe import MixContext
from frugalformers.nn.norms import make_norm
from frugalformers.nn.positions import LearnedPositions, RotaryEmbedding


class DecoderLM(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.positions = LearnedPositions(config.max_seq_len, config.d_model) if config.position == "learned" else None
        self.rotary = (
            RotaryEmbedding(config.resolved_head_dim, config.max_seq_len, config.rope_theta)
            if config.position == "rotary"
            else None
        )
        self.layers = nn.ModuleList(PreNormLayer(config, i, "decoder") for i in range(config.n_layers))
        self.final_norm = make_norm(config.norm, config.d_model, config.norm_eps)
        self.lm_head = None if config.tie_word_embeddings else nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.dropout = nn.Dropout(config.dropout)
        for m in self.modules():
            if isinstance(m, nn.Linear | nn.Embedding | LearnedPositions):
                nn.init.normal_(m.weight, std=config.init_std)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
        input_pos: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> ModelOutput:
        """input_ids (B, T). attention_mask (B, T) 1 for real tokens (or (B, S_max) over the cache
        when decoding). positions (T,) or (B, T): position ids (default 0..T-1, or input_pos).
        input_pos (T,): decode with the static caches (see `setup_cache`), writing at these slots.
        labels (B, T): next-token targets are labels shifted left inside; -100 is ignored."""
        B, T = input_ids.shape
        if positions is None:
            positions = input_pos if input_pos is not None else torch.arange(T, device=input_ids.device)
        x = self.embed(input_ids)  # (B, T, d)
        rope = None
        if self.rotary is not None:
            # checked where it costs no device sync and breaks no graph (eager CPU); on GPU an out-of-range
            # position fails in indexing, and cached decoding checks its length up front (setup_cache)
            eager_cpu = positions.device.type == "cpu" and not torch.compiler.is_compiling()
            if eager_cpu and int(positions.max()) >= self.rotary.max_len:
                raise ValueError(
                    f"position {int(positions.max())} exceeds max_seq_len={self.rotary.max_len}; "
                    f"build the model with a larger max_seq_len"
                )
            rope = self.rotary(positions)
        else:
            x = x + self.positions.weight[positions]
        x = self.dropout(x)
        aux: dict[str, torch.Tensor] = {}
        mask = attention_mask.bool() if attention_mask is not None else None
        ctx = MixContext(key_padding_mask=mask, rope=rope, input_pos=input_pos, token_ids=input_ids)
        for layer in self.layers:
            x, layer_aux = layer(x, ctx)
            add_aux(aux, layer_aux)
        h = self.final_norm(x)
        logits = self.lm_head(h) if self.lm_head is not None else F.linear(h, self.embed.weight)
        out = ModelOutput(hidden=h, logits=logits, aux_losses=aux)
        if labels is not None:
            out.loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100)
        return out

    def setup_cache(self, batch: int, max_len: int, dtype=None, device=None, grouped_decode: str = "auto") -> None:
        """Static KV caches `(B, G, max_len, D)` in every layer: only the G kv heads are stored.
        `grouped_decode`: how attention decodes (`models.decoding`)."""
        if max_len > self.config.max_seq_len:
            raise ValueError(f"max_len={max_len} exceeds max_seq_len={self.config.max_seq_len}")
        dtype, device = dtype or self.embed.weight.dtype, device or self.embed.weight.device
        self.clear_cache()
        attach_caches(self.layers, self.layers, batch, max_len, dtype, device, grouped_decode)

    def clear_cache(self) -> None:
        detach_caches(self.layers, self.layers)
