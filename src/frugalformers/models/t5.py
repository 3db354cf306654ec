"""T5 family (T5.1.1): pre-RMSNorm encoder-decoder with relative position bias and no biases.

The encoder layers come from the recipe (dense attention now; local, transient-global and CoLT5
layers register later); the decoder uses causal self-attention and cross-attention with
`n_kv_heads` key/value heads (GQA / MQA), as in the GQA and CoLT5 papers. One relative position
bias per stack is computed once and shared by all its layers (T5 keeps it in layer 0).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from frugalformers.config import ModelConfig
from frugalformers.models.decoding import attach_caches, detach_caches
from frugalformers.models.layers import PreNormLayer
from frugalformers.models.outputs import ModelOutput, add_aux
from frugalformers.models.recipe import MixContext, light_heads, share_word_expert_bank
from frugalformers.nn.attention import Attention
from frugalformers.nn.ffn import FeedForward
from frugalformers.nn.norms import RMSNorm, make_norm
from frugalformers.nn.positions import RelativePositionBias

LOCAL_MIXERS = ("local_attention", "transient_global", "routed_attention")


def local_attention_heads(config: ModelConfig, mixer: str) -> int:
    """Heads of a mixer's local-window attention: all of them, or CoLT5's light branch's."""
    return light_heads(config) if mixer == "routed_attention" else config.n_heads


class T5Stack(nn.Module):
    def __init__(self, config: ModelConfig, stack: str):
        super().__init__()
        self.stack = stack
        is_decoder = stack == "decoder"
        n = config.decoder_layers if is_decoder else config.n_layers
        # the relative bias is only needed by dense attention layers (local / routed mixers carry
        # their own): a stack without them has no bias table, so no parameter goes unused
        self.dense_attention = is_decoder or any(config.layer_mixer(i) == "attention" for i in range(n))
        self.relative_bias = (
            RelativePositionBias(
                config.n_heads,
                config.relative_buckets,
                config.relative_max_distance,
                bidirectional=not is_decoder,
            )
            if self.dense_attention
            else None
        )
        # local windows (LongT5 local / transient-global attention, CoLT5's light branch): LongT5's relative
        # bias over the window, one table per stack shared by its layers; transient-global adds a second
        # table over global blocks
        mixers = [] if is_decoder else [config.layer_mixer(i) for i in range(n)]
        local_heads = [local_attention_heads(config, m) for m in mixers if m in LOCAL_MIXERS]
        tglobal = "transient_global" in mixers
        self.local_bias = (
            RelativePositionBias(max(local_heads), config.relative_buckets, config.relative_max_distance)
            if local_heads
            else None
        )
        self.global_bias = (
            RelativePositionBias(config.n_heads, config.relative_buckets, config.relative_max_distance)
            if tglobal
            else None
        )
        self.layers = nn.ModuleList(PreNormLayer(config, i, stack, cross_attention=is_decoder) for i in range(n))
        self.final_norm = make_norm(config.norm, config.d_model, config.norm_eps)
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        x: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        memory: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
        input_pos: torch.Tensor | None = None,
        cross_kv: list | None = None,
        token_ids: torch.Tensor | None = None,
        word_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict]:
        """x (B, T, d) embedded tokens. With `input_pos` (decoding), the self-attention reads the
        static caches and the bias covers query positions input_pos against all cached keys."""
        T = x.shape[1]
        if not self.dense_attention:  # local / routed mixers: no T x T bias (16k inputs would not fit)
            bias = None
        elif input_pos is not None:
            S = self.layers[0].mixer.kv_cache.max_len
            bias = self.relative_bias(T, S, q_offset=input_pos[0])  # (1, H, T, S_max)
        else:
            bias = self.relative_bias(T, T)  # (1, H, T, T)
        mask = attention_mask.bool() if attention_mask is not None else None
        extras = {"word_ids": word_ids} if word_ids is not None else {}
        if self.local_bias is not None:
            extras["local_bias"] = self.local_bias
        if self.global_bias is not None:
            extras["global_bias"] = self.global_bias
        ctx = MixContext(key_padding_mask=mask, attn_bias=bias, input_pos=input_pos, token_ids=token_ids, extras=extras)
        x = self.dropout(x)
        aux: dict[str, torch.Tensor] = {}
        for i, layer in enumerate(self.layers):
            kv = cross_kv[i] if cross_kv is not None else None
            x, layer_aux = layer(x, ctx, memory=memory, memory_mask=memory_mask, cross_kv=kv)
            add_aux(aux, layer_aux)
        return self.dropout(self.final_norm(x)), aux


class T5Model(nn.Module):
    """Encoder-decoder; `forward` returns the decoder's hidden states (and the encoder's)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.shared = nn.Embedding(config.vocab_size, config.d_model)
        self.encoder = T5Stack(config, "encoder")
        self.decoder = T5Stack(config, "decoder")
        share_word_expert_bank(self, config)
        init_t5_weights(self, config)

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, word_ids=None):
        """word_ids (B, T): routing ids of the input's words, for MoWE layers (Tokenizer.word_ids)."""
        return self.encoder(self.shared(input_ids), attention_mask, token_ids=input_ids, word_ids=word_ids)

    def forward(
        self,
        input_ids: torch.Tensor,
        decoder_input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        word_ids: torch.Tensor | None = None,
        decoder_word_ids: torch.Tensor | None = None,
    ) -> ModelOutput:
        """word_ids / decoder_word_ids: routing ids for encoder / decoder MoWE layers
        (`Tokenizer.word_ids` of the input, `Tokenizer.causal_word_ids` of the decoder input)."""
        enc, aux = self.encode(input_ids, attention_mask, word_ids)
        dec, dec_aux = self.decoder(
            self.shared(decoder_input_ids),
            decoder_attention_mask,
            memory=enc,
            memory_mask=attention_mask.bool() if attention_mask is not None else None,
            token_ids=decoder_input_ids,
            word_ids=decoder_word_ids,
        )
        add_aux(aux, dec_aux)
        return ModelOutput(hidden=dec, encoder_hidden=enc, aux_losses=aux)


class T5EncoderModel(nn.Module):
    """The encoder alone (embeddings + stack), e.g. for long-input classification or benchmarks."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.shared = nn.Embedding(config.vocab_size, config.d_model)
        self.encoder = T5Stack(config, "encoder")
        share_word_expert_bank(self, config)
        init_t5_weights(self, config)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, word_ids=None
    ) -> ModelOutput:
        h, aux = self.encoder(self.shared(input_ids), attention_mask, token_ids=input_ids, word_ids=word_ids)
        return ModelOutput(hidden=h, aux_losses=aux)


class T5ForConditionalGeneration(T5Model):
    """T5Model plus the LM head: tied to `shared` (scaled by d_model^-0.5, as T5) or separate (T5.1.1)."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.lm_head = None if config.tie_word_embeddings else nn.Linear(config.d_model, config.vocab_size, bias=False)
        if self.lm_head is not None:
            # T5X's `logits_dense` (variance_scaling(1.0, "fan_in")): std d_model^-0.5, so the first
            # logits have unit scale as in the tied case. Hugging Face's init uses std 1.0, which makes
            # the untrained loss ~sqrt(d_model) times too large (~90 nats at d_model 512).
            nn.init.normal_(self.lm_head.weight, std=config.d_model**-0.5)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.lm_head is None:
            return F.linear(hidden * self.config.d_model**-0.5, self.shared.weight)
        return self.lm_head(hidden)

    def shift_right(self, labels: torch.Tensor) -> torch.Tensor:
        """Decoder inputs from labels: start token, then labels[:-1], with -100 replaced by pad."""
        start = torch.full_like(labels[:, :1], self.config.decoder_start_token_id)
        shifted = torch.cat([start, labels[:, :-1]], dim=1)
        return shifted.masked_fill(shifted == -100, self.config.pad_token_id)

    def forward(  # type: ignore[override]
        self,
        input_ids: torch.Tensor,
        decoder_input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        word_ids: torch.Tensor | None = None,
        decoder_word_ids: torch.Tensor | None = None,
    ) -> ModelOutput:
        if decoder_input_ids is None:
            if labels is None:
                raise ValueError("pass decoder_input_ids or labels (decoder inputs are labels shifted right)")
            decoder_input_ids = self.shift_right(labels)
        out = super().forward(
            input_ids, decoder_input_ids, attention_mask, decoder_attention_mask, word_ids, decoder_word_ids
        )
        out.logits = self.logits(out.hidden)
        if labels is not None:
            out.loss = F.cross_entropy(out.logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100)
        return out

    # ------------------------------------------------------------------ incremental decoding
    def setup_cache(self, batch: int, max_len: int, dtype=None, device=None, grouped_decode: str = "auto") -> None:
        """Static self-attention caches holding the decoder's kv heads only; `grouped_decode`: how
        attention decodes (`models.decoding`)."""
        dtype, device = dtype or self.shared.weight.dtype, device or self.shared.weight.device
        attach_caches(self.decoder, self.decoder.layers, batch, max_len, dtype, device, grouped_decode)

    def clear_cache(self) -> None:
        detach_caches(self.decoder, self.decoder.layers)

    def cross_kv(self, memory: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Cross-attention keys/values of the encoder output, computed once per input."""
        return [layer.cross.project_kv(memory) for layer in self.decoder.layers]

    def decode_step(
        self,
        decoder_input_ids: torch.Tensor,
        input_pos: torch.Tensor,
        memory_mask: torch.Tensor | None,
        cross_kv: list,
        decoder_attention_mask: torch.Tensor | None = None,
        decoder_word_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits (B, T, vocab) for new decoder tokens at `input_pos`, using the caches."""
        h, _ = self.decoder(
            self.shared(decoder_input_ids),
            decoder_attention_mask,
            memory_mask=memory_mask,
            input_pos=input_pos,
            cross_kv=cross_kv,
            token_ids=decoder_input_ids,
            word_ids=decoder_word_ids,
        )
        return self.logits(h)


def init_t5_weights(module: nn.Module, config: ModelConfig) -> None:
    """Mesh-TensorFlow T5 init (the scale that T5's unscaled attention logits rely on)."""
    d, dkv, H = config.d_model, config.resolved_head_dim, config.n_heads
    for m in module.modules():
        if isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=1.0)
        elif isinstance(m, Attention):
            nn.init.normal_(m.q.weight, std=(d * dkv) ** -0.5)
            nn.init.normal_(m.k.weight, std=d**-0.5)
            nn.init.normal_(m.v.weight, std=d**-0.5)
            nn.init.normal_(m.o.weight, std=(H * dkv) ** -0.5)
        elif isinstance(m, RelativePositionBias):
            nn.init.normal_(m.weight, std=d**-0.5)
        elif isinstance(m, RMSNorm):
            nn.init.ones_(m.weight)
        elif isinstance(m, FeedForward):
            for lin in (m.w_in, getattr(m, "w_gate", None)):
                if lin is not None:
                    nn.init.normal_(lin.weight, std=d**-0.5)
            nn.init.normal_(m.w_out.weight, std=config.d_ff**-0.5)
