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

Dispatch: routed tokens are sorted by expert (the paper's frequency buckets and expert blocks are
one way to batch a Zipfian load; sorting gives every expert its contiguous rows, and tiles of 16
rows per expert do the rest). Where Triton runs (CUDA; CPU under the interpreter) the experts are
three fused kernels that read the bank in place (`kernels.word_experts`: a tile per 16 rows of
an expert, no gathered weight copy, the weight gradient written once for the touched experts);
otherwise, on CUDA with bf16, one grouped GEMM over the touched experts' gathered weights
(`torch._grouped_mm`), and elsewhere gathered per-token expert weights in chunks (exact,
memory-bounded). `reference_forward` is the per-token loop the tests hold all of them to.

Overflow policy: none is needed. Routing is fixed by word, every routed token is computed by its
expert however many tokens that expert gets (no capacity, no dropping: a frequent word's expert
gets more tiles), so the layer is exact and its cost follows the number of routed tokens.

The bank can be stored in bf16 (`dtype`: the forward and backward read half the bytes, which is
what the layer's speed depends on) and can give a row-sparse gradient (`sparse_grad`: only the
touched experts' rows, as `nn.Embedding(sparse=True)` does; a 32K-expert bank has 3.2B parameters,
a dense gradient of it is 6.4-12.9 GB written per step while a 32k-token batch touches a third of
the experts). `train.row_sparse_adamw` updates such rows lazily, with float32 master weights for a
bf16 bank. See `benchmarks/mowe.py` for the byte counts.
"""

from __future__ import annotations

import torch
from torch import nn

from frugalformers.kernels.word_experts import fused_applies, route_words, word_expert_ffn
from frugalformers.nn import grouped_experts
from frugalformers.nn.ffn import activation_fn
from frugalformers.nn.precision import compute_dtype
from frugalformers.options import WordExpertOptions

BANK_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}

KNUTH = 2654435761


def expert_of(routing_ids: torch.Tensor, n_experts: int) -> torch.Tensor:
    """Fixed hash routing id -> expert in [0, n_experts)."""
    return ((routing_ids.long() * KNUTH) % (2**32)) % n_experts


def rows_per_expert(expert: torch.Tensor, n: int) -> torch.Tensor:
    """(n,) how many entries of `expert` name each of 0..n-1 (bincount would sync with the host to
    size its output)."""
    return torch.zeros(n, dtype=torch.long, device=expert.device).index_add_(0, expert, torch.ones_like(expert))


class WordExpertBank(nn.Module):
    """E experts d -> d_expert -> d, stored stacked: w_in (E, d, d_e), w_out (E, d_e, d), in `dtype`
    (float32 or bfloat16). `sparse_grad`: their gradients are row-sparse COO tensors over the
    touched experts (the parameters carry `row_sparse_grad = True` for the optimizer). Under expert
    parallelism (`shard_experts`) only this rank's E / W experts are stored and `ep` holds the
    placement."""

    expert_param_names = ("w_in", "w_out")

    def __init__(
        self,
        n_experts: int,
        d_model: int,
        d_expert: int,
        activation: str = "gelu_new",
        dtype: str | torch.dtype = "float32",
        sparse_grad: bool = False,
    ):
        super().__init__()
        if n_experts < 1 or d_expert < 1:
            raise ValueError(f"n_experts={n_experts} and d_expert={d_expert} must be positive")
        resolved = BANK_DTYPES.get(dtype) if isinstance(dtype, str) else dtype
        if resolved not in BANK_DTYPES.values():
            raise ValueError(f"dtype={dtype!r} is not a bank dtype; use one of {sorted(BANK_DTYPES)}")
        dtype = resolved
        self.n_experts = n_experts
        self.w_in = nn.Parameter((torch.randn(n_experts, d_model, d_expert) * d_model**-0.5).to(dtype))
        self.w_out = nn.Parameter((torch.randn(n_experts, d_expert, d_model) * d_expert**-0.5).to(dtype))
        self.activation = activation
        self.act = activation_fn(activation)
        self.ep = None
        self.sparse_grad = False
        self.set_sparse_grad(sparse_grad)

    def set_sparse_grad(self, enabled: bool) -> None:
        """Row-sparse gradients (True) or dense ones; the parameters are marked for the optimizer."""
        self.sparse_grad = bool(enabled)
        for p in (self.w_in, self.w_out):
            p.row_sparse_grad = self.sparse_grad

    def gather(self, w: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
        """w[experts] (k, ., .) for a bank weight w (E, ., .); its gradient is row-sparse COO when the
        bank's is (`_RowGather`)."""
        if not self.sparse_grad:
            return w.index_select(0, experts)
        return _RowGather.apply(w, experts)

    def freeze(self, frozen: bool = True) -> None:
        """Freeze the experts for fine-tuning (the paper: frozen experts fine-tune better)."""
        self.requires_grad_(not frozen)


class _RowGather(torch.autograd.Function):
    """w.index_select(0, rows) whose gradient is row-sparse COO over w (rows may repeat: the
    gradient is then uncoalesced, as `nn.Embedding(sparse=True)`'s is)."""

    @staticmethod
    def forward(ctx, w, rows):
        ctx.shape = w.shape
        ctx.save_for_backward(rows)
        return w.index_select(0, rows)

    @staticmethod
    def backward(ctx, grad):
        (rows,) = ctx.saved_tensors
        sparse = torch.sparse_coo_tensor(rows[None], grad, ctx.shape, check_invariants=False)
        return sparse, None


class WordExperts(nn.Module):
    """The MoWE feed-forward of one layer; `bank` may be shared with other layers."""

    takes_context = True

    IMPLS = ("auto", "unfused")

    def __init__(
        self,
        bank: WordExpertBank | None,
        skip_top: int = WordExpertOptions.mowe_skip_top,
        chunk: int = 4096,
        impl: str = "auto",
    ):
        super().__init__()
        if impl not in self.IMPLS:
            raise ValueError(f"impl={impl!r} is not a word-expert dispatch; use one of {self.IMPLS}")
        self.bank = bank
        self.skip_top, self.chunk = skip_top, chunk
        self.impl = impl  # "auto": the fused kernels where they apply; "unfused": grouped GEMM / gathered weights

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
        ids = word_ids.reshape(B * T)
        bank = self.bank
        if bank.ep is None and self.impl == "auto" and fused_applies(x, bank.w_in, bank.activation):
            return self._fused(x, ids, ctx)
        token = self.routed_mask(ids).nonzero().squeeze(-1)  # (P,) routed token positions
        expert = expert_of(ids[token], self.bank.n_experts)  # (P,)
        y = torch.zeros_like(x.reshape(B * T, d))  # in x's dtype: the residual's
        if token.numel():
            order = expert.argsort(stable=True)
            token, expert = token[order], expert[order]
            counts = rows_per_expert(expert, self.bank.n_experts)  # (E,)
            ep = self.bank.ep
            # rows move (and meet the GEMMs) in the compute dtype: bf16 under autocast, so CUDA takes _grouped_mm
            flat = x.reshape(B * T, d).to(compute_dtype(x))
            if ep is None:
                out = self._experts(flat.index_select(0, token), counts)
            else:  # rows travel to the rank holding their expert and back
                out = ep.run_sorted(flat.index_select(0, token), counts, self._experts)
            y = y.index_copy(0, token, out.to(y.dtype))  # one expert per token: a copy, no atomics
        return y.reshape(B, T, d)

    def _fused(self, x: torch.Tensor, ids: torch.Tensor, ctx=None) -> torch.Tensor:
        """The fused kernels, the bank read in place (`kernels.word_experts`), routed without a
        host sync. The routing depends only on the word ids, so the MoWE layers of one stack (the
        paper's two per encoder and decoder, sharing the bank) make it once: it is kept in
        ctx.extras for the next layer."""
        B, T, d = x.shape
        bank = self.bank
        key = ("word_expert_routing", bank.n_experts, self.skip_top)
        words = ctx.extras.get("word_ids") if ctx is not None else None  # ids is a view of it
        cached = ctx.extras.get(key) if ctx is not None else None
        if cached is not None and cached[0] is words:
            routing = cached[1]
        else:
            routing = route_words(ids, bank.n_experts, self.skip_top)
            if ctx is not None:
                ctx.extras[key] = (words, routing)
        out = word_expert_ffn(x.reshape(B * T, d), bank.w_in, bank.w_out, routing, bank.activation, bank.sparse_grad,
                              compute_dtype(x))  # fmt: skip
        return out.reshape(B, T, d)  # in x's dtype, zero rows where nothing was routed

    def _experts(self, h: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """h (P, d) sorted by expert, counts (E_here,) tokens per expert held here -> (P, d)."""
        bank = self.bank
        if grouped_experts.grouped_mm_applies(h, bank.w_in):  # touched experts only
            return grouped_experts.grouped_expert_ffn(h, counts, bank.w_in, bank.w_out, bank.act, gather=bank.gather)
        expert = torch.arange(counts.numel(), device=h.device).repeat_interleave(counts)  # (P,)
        outs = []
        for s in range(0, h.shape[0], self.chunk):  # gathered weights, memory-bounded
            e = expert[s : s + self.chunk]
            w_in, w_out = (bank.gather(w, e).to(h.dtype) for w in (bank.w_in, bank.w_out))  # (c, d, d_e), (c, d_e, d)
            a = bank.act(torch.bmm(h[s : s + self.chunk, None], w_in))  # (c, 1, d_e)
            outs.append(torch.bmm(a, w_out)[:, 0])  # (c, d)
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
                    y[b, t] = bank.act(x[b, t] @ bank.w_in[e].to(x.dtype)) @ bank.w_out[e].to(x.dtype)
        return y
