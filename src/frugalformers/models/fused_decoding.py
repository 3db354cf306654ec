"""A decoder LM's decode step with each layer as one kernel (`setup_cache(decode_layer="fused")`).

`FusedDecoding` holds what `nn.decode_layer_kernel` needs for a `DecoderLM` whose layers are all
Llama-shaped (RMSNorm pre-norm, rotary attention without biases, SwiGLU): each layer's weights as
the fused views that `setup_cache` already made (q/k/v and gate/up, `nn.fused_linear`), the caches,
and the scratch buffers of one step. `why_not` names what keeps a model off this path, and
`setup_cache` raises with it rather than decoding some other way than the one asked for.
"""

from __future__ import annotations

import torch

from frugalformers.nn.decode_layer_kernel import (
    LAUNCH,
    FusedLayerBuffers,
    LayerShape,
    attention_bias,
    fused_decode_layer,
    fused_layer_applies,
    norm_input,
    register_buffers,
    release_buffers,
)

DECODE_LAYERS = ("modules", "fused")


def why_not(model) -> str | None:
    """Why `model` cannot decode with fused layers, or None when it can."""
    from frugalformers.nn.attention import Attention
    from frugalformers.nn.ffn import FeedForward
    from frugalformers.nn.norms import RMSNorm
    from frugalformers.nn.skinny_gemm import runs_on

    c = model.config
    if c.family != "decoder":
        return f"family={c.family!r}: only decoder-only models have fused decode layers"
    if model.rotary is None:
        return f"position={c.position!r}: the fused layer applies rotary positions"
    D = model.layers[0].mixer.head_dim
    if not (16 <= D <= 256 and D & (D - 1) == 0):
        return f"head_dim={D}: the kernel tiles power-of-two head dims from 16 to 256"
    if model.embed.weight.dtype not in (torch.bfloat16, torch.float16, torch.float32):
        return f"dtype {model.embed.weight.dtype}: use bfloat16, float16 or float32 weights"
    for i, layer in enumerate(model.layers):
        m, f = layer.mixer, layer.ffn
        if not isinstance(m, Attention) or m.q.bias is not None or m.o.bias is not None or m.impl == "reference":
            return f"layer {i}: the mixer is not a bias-free SDPA attention ({type(m).__name__})"
        if m.head_dim != D or m.n_kv_heads != model.layers[0].mixer.n_kv_heads:
            return f"layer {i}: heads differ from layer 0's"
        if not isinstance(f, FeedForward) or f.w_gate is None or f.activation != "silu" or f.w_in.bias is not None:
            return f"layer {i}: the feed-forward is not a bias-free SwiGLU ({type(f).__name__})"
        if layer.cross is not None or not all(isinstance(n, RMSNorm) for n in (layer.mixer_norm, layer.ffn_norm)):
            return f"layer {i}: has cross-attention or a norm other than RMSNorm"
        if layer.mixer_norm.eps != layer.ffn_norm.eps:
            return f"layer {i}: its two norms have different eps"
    device = model.embed.weight.device
    if not runs_on(device):
        return f"Triton does not run on {device.type} here (CUDA, or CPU under TRITON_INTERPRET=1)"
    return None


class FusedDecoding:
    """The per-step state of fused decoding for one `setup_cache` (batch, cache length, dtype)."""

    def __init__(
        self,
        model,
        batch: int,
        max_len: int,
        dtype: torch.dtype,
        persistent: bool = True,
        cooperative: bool = True,
        launch: dict | None = None,
        prefetch: bool = True,
        **plan,
    ):
        """`persistent` False: a launch per phase instead of one per layer; `cooperative` False:
        the persistent kernel launched as a plain grid; `launch`: num_warps / num_stages
        (default `nn.decode_layer_kernel.LAUNCH`); `prefetch` False: no L2 prefetch of the next
        phase's bytes; `plan`: `FusedLayerBuffers.make`'s overrides (programs, ctas_per_sm,
        block_k, splits)."""
        reason = why_not(model)
        if reason is not None:
            raise ValueError(f"decode_layer='fused' does not apply: {reason}; use decode_layer='modules'")
        if dtype != model.embed.weight.dtype:
            raise ValueError(
                f"decode_layer='fused' keeps the cache in the weights' dtype ({model.embed.weight.dtype}), not {dtype}"
            )
        m0 = model.layers[0].mixer
        device = model.embed.weight.device
        c = model.config
        shape = LayerShape(batch, c.d_model, m0.n_heads, m0.n_kv_heads, m0.head_dim, c.d_ff, max_len)
        self.buffers = FusedLayerBuffers.make(shape, dtype, device, **plan)
        self.persistent, self.cooperative = persistent, cooperative
        self.launch = {**LAUNCH, **(launch or {})}
        self.prefetch = prefetch
        self.eps = model.layers[0].mixer_norm.eps
        self.key = register_buffers(self.buffers)

    def release(self) -> None:
        """Drop the scratch (`clear_cache`)."""
        release_buffers(self.key)

    @staticmethod
    def layer_weights(layer) -> tuple[torch.Tensor, ...]:
        """(Wqkv, Wo, norm2, Wgate_up, Wdown) of a layer in decoding form (fused views); its first
        norm reaches the kernel through the previous layer (`launch_layer`'s `next_ln`)."""
        m, f = layer.mixer, layer.ffn
        return (
            m._fused_qkv[0],
            m.o.weight,
            layer.ffn_norm.weight,
            f._fused_gate_in[0],
            f.w_out.weight,
        )

    def applies(self, x: torch.Tensor, input_pos: torch.Tensor | None, training: bool) -> bool:
        """A one-token decode step of the batch the buffers were made for, in eval mode (the
        kernel has no dropout), without autograd."""
        sh = self.buffers.shape
        return input_pos is not None and not training and x.shape[:2] == (sh.batch, 1) and fused_layer_applies(x)

    def run_layers(
        self,
        model,
        x: torch.Tensor,
        positions: torch.Tensor,
        input_pos: torch.Tensor,
        attention_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """x (B, 1, d) embeddings -> (B, 1, d) after every layer, writing each layer's new k / v."""
        B = x.shape[0]
        h = x.reshape(B, -1).contiguous()  # (B, d)
        pos = positions.reshape(-1)  # (B,) rotary position of each row, or (1,) of all
        sh = self.buffers.shape
        if attention_mask is not None and tuple(attention_mask.shape) != (sh.batch, sh.max_len):
            raise ValueError(
                f"attention_mask of shape {tuple(attention_mask.shape)}: a fused decode step takes it over the "
                f"whole cache, ({sh.batch}, {sh.max_len}), True for the keys each row may see"
            )
        bias = attention_bias(attention_mask, input_pos.reshape(1), sh.batch, sh.max_len)  # (B, S), every layer's
        layers = list(model.layers)
        xw, ssq = norm_input(h, layers[0].mixer_norm.weight, self.buffers.plan["block_m"])
        for i, layer in enumerate(layers):
            m = layer.mixer
            last = i + 1 == len(layers)
            next_ln = model.final_norm.weight if last else layers[i + 1].mixer_norm.weight
            next_wqkv = (layer if last else layers[i + 1]).mixer._fused_qkv[0]  # prefetched (the last: its own)
            h, xw, ssq = fused_decode_layer(
                h, xw, ssq, list(self.layer_weights(layer)), next_ln, next_wqkv, m.kv_cache.k, m.kv_cache.v,
                model.rotary.cos, model.rotary.sin, pos, input_pos.reshape(1), bias, self.eps, m.scale,
                self.persistent, self.cooperative, self.launch["num_warps"], self.launch["num_stages"], self.prefetch,
                self.key,
            )  # fmt: skip
        return h.reshape(B, 1, -1)  # (B, 1, d)
