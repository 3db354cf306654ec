"""MoWE: a large bank of small experts routed by word (dos Santos et al. 2023, "Memory Augmented
Language Models through Mixture of Word Experts").

Each token carries the routing id of the word it belongs to (`Tokenizer.word_ids`: ids 1..N in
frequency order, 0 = not in the routing vocabulary). A fixed hash maps routing ids to experts, so
every piece of a word reaches the same expert and there is no learned router and no balancing
loss. The `skip_top` most frequent ids (default 16: punctuation and function words, up to ~28% of
tokens in the paper) and id 0 are not routed: their FFN output is zero, so the layer leaves their
residual unchanged (the paper does not say how skipped tokens are handled; this is our choice, and
out-of-vocabulary words are skipped the same way). One bank is shared by all MoWE layers (the
paper shares parameters across its 4 MoWE layers) and can be frozen for fine-tuning.

The hash is Knuth's multiplicative hash modulo E (the paper's hash is not published): it spreads
the frequency-ordered ids over the experts instead of giving consecutive frequent words
consecutive experts.

Dispatch: routed tokens are sorted by expert; on CUDA with bf16 the experts run as one grouped GEMM
(`torch._grouped_mm`, a bucket per expert), elsewhere as gathered per-token expert weights in
chunks (exact, memory-bounded). `reference_forward` is the per-token loop the tests hold both to.

The grouped GEMM runs over the experts the batch touches only: their weights are gathered (and
cast to bf16) first. Casting the whole float32 bank instead reads all of it every call and sends a
bank-sized gradient back through the cast (at 32K experts 3.2B parameters, 12.9 GB, while a batch
of 32k tokens touches about a third of the experts); see `benchmarks/mowe.py` for the byte counts.
"""

from __future__ import annotations

import torch
from torch import nn

from frugalformers.nn import grouped_experts
from frugalformers.nn.ffn import activation_fn
from frugalformers.nn.precision import compute_dtype

KNUTH = 2654435761


def expert_of(routing_ids: torch.Tensor, n_experts: int) -> torch.Tensor:
    """Fixed hash routing id -> expert in [0, n_experts)."""
    return ((routing_ids.long() * KNUTH) % (2**32)) % n_experts


class WordExpertBank(nn.Module):
    """E experts d -> d_expert -> d, stored stacked: w_in (E, d, d_e), w_out (E, d_e, d).
    Under expert parallelism (`shard_experts`) only this rank's E / W experts are stored and
    `ep` holds the placement."""

    expert_param_names = ("w_in", "w_out")

    def __init__(self, n_experts: int, d_model: int, d_expert: int, activation: str = "gelu_new"):
        super().__init__()
        if n_experts < 1 or d_expert < 1:
            raise ValueError(f"n_experts={n_experts} and d_expert={d_expert} must be positive")
        self.n_experts = n_experts
        self.w_in = nn.Parameter(torch.randn(n_experts, d_model, d_expert) * d_model**-0.5)
        self.w_out = nn.Parameter(torch.randn(n_experts, d_expert, d_model) * d_expert**-0.5)
        self.act = activation_fn(activation)
        self.ep = None

    def freeze(self, frozen: bool = True) -> None:
        """Freeze the experts for fine-tuning (the paper: frozen experts fine-tune better)."""
        self.requires_grad_(not frozen)


class WordExperts(nn.Module):
    """The MoWE feed-forward of one layer; `bank` may be shared with other layers."""

    takes_context = True

    def __init__(self, bank: WordExpertBank | None, skip_top: int = 16, chunk: int = 4096):
        super().__init__()
        self.bank = bank
        self.skip_top, self.chunk = skip_top, chunk

    def routed_mask(self, word_ids: torch.Tensor) -> torch.Tensor:
        return word_ids > self.skip_top  # id 0 (unknown) and the most frequent ids are skipped

    def forward(self, x: torch.Tensor, ctx=None) -> torch.Tensor:
        """x (B, T, d) -> (B, T, d); routing ids from ctx.extras["word_ids"] (B, T)."""
        word_ids = None if ctx is None else ctx.extras.get("word_ids")
        if word_ids is None and x.device.type != "meta":
            raise ValueError("a MoWE layer needs word_ids (B, T): pass word_ids= from Tokenizer.word_ids")
        B, T, d = x.shape
        if x.device.type == "meta":  # FLOP counting: every token through one expert (the active cost)
            return self.bank.act(x @ self.bank.w_in[0]) @ self.bank.w_out[0]
        # rows move (and meet the GEMMs) in the compute dtype: bf16 under autocast, so CUDA takes _grouped_mm
        flat, ids = x.reshape(B * T, d).to(compute_dtype(x)), word_ids.reshape(B * T)
        token = self.routed_mask(ids).nonzero().squeeze(-1)  # (P,) routed token positions
        expert = expert_of(ids[token], self.bank.n_experts)  # (P,)
        y = torch.zeros_like(x.reshape(B * T, d))  # in x's dtype: the residual's
        if token.numel():
            order = expert.argsort(stable=True)
            token, expert = token[order], expert[order]
            counts = torch.bincount(expert, minlength=self.bank.n_experts)  # (E,)
            ep = self.bank.ep
            if ep is None:
                out = self._experts(flat.index_select(0, token), counts)
            else:  # rows travel to the rank holding their expert and back
                out = ep.run_sorted(flat.index_select(0, token), counts, self._experts)
            y = y.index_copy(0, token, out.to(y.dtype))  # one expert per token: a copy, no atomics
        return y.reshape(B, T, d)

    def _experts(self, h: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """h (P, d) sorted by expert, counts (E_here,) tokens per expert held here -> (P, d)."""
        bank = self.bank
        if grouped_experts.grouped_mm_applies(h, bank.w_in):  # touched experts only
            return grouped_experts.grouped_expert_ffn(h, counts, bank.w_in, bank.w_out, bank.act)
        expert = torch.arange(counts.numel(), device=h.device).repeat_interleave(counts)  # (P,)
        outs = []
        for s in range(0, h.shape[0], self.chunk):  # gathered weights, memory-bounded
            e = expert[s : s + self.chunk]
            a = bank.act(torch.bmm(h[s : s + self.chunk, None], bank.w_in.index_select(0, e)))  # (c, 1, d_e)
            outs.append(torch.bmm(a, bank.w_out.index_select(0, e))[:, 0])  # (c, d)
        return torch.cat(outs)

    def reference_forward(self, x: torch.Tensor, word_ids: torch.Tensor) -> torch.Tensor:
        """Per-token loop: y_t = FFN_{hash(id_t)}(x_t) for routed tokens, 0 otherwise."""
        y = torch.zeros_like(x)
        bank = self.bank
        for b in range(x.shape[0]):
            for t in range(x.shape[1]):
                rid = int(word_ids[b, t])
                if rid > self.skip_top:
                    e = int(expert_of(torch.tensor(rid), bank.n_experts))
                    y[b, t] = bank.act(x[b, t] @ bank.w_in[e]) @ bank.w_out[e]
        return y
