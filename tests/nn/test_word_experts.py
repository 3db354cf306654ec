import torch
from torch import nn

from frugalformers.checkpoint import read_state, save_state
from frugalformers.models.recipe import MixContext
from frugalformers.nn.word_experts import WordExpertBank, WordExperts, expert_of


def ctx(word_ids):
    return MixContext(extras={"word_ids": word_ids})


def test_dispatch_equals_the_per_token_loop():
    bank = WordExpertBank(1000, 16, 8)
    layer = WordExperts(bank, skip_top=16, chunk=7)  # small chunks exercise the chunked path
    x = torch.randn(3, 20, 16)
    ids = torch.randint(0, 3000, (3, 20))
    assert torch.allclose(layer(x, ctx(ids)), layer.reference_forward(x, ids), atol=1e-5)


def test_every_piece_of_a_word_reaches_the_same_expert():
    ids = torch.tensor([[17, 17, 17, 523, 523]])  # two words of 3 and 2 pieces
    e = expert_of(ids, 32768)
    assert e[0, 0] == e[0, 1] == e[0, 2] and e[0, 3] == e[0, 4]
    assert len({int(v) for v in expert_of(torch.arange(17, 5017), 32768)}) > 4900  # spread, not clumped


def test_skipped_ids_leave_the_residual_unchanged():
    layer = WordExperts(WordExpertBank(64, 8, 4), skip_top=16)
    x = torch.randn(1, 6, 8)
    ids = torch.tensor([[0, 3, 16, 17, 40, 2]])  # unknown, frequent, frequent, routed, routed, frequent
    y = layer(x, ctx(ids))
    assert (y[0, [0, 1, 2, 5]] == 0).all() and (y[0, [3, 4]] != 0).any()


def test_frozen_bank_gets_no_gradient():
    bank = WordExpertBank(64, 8, 4)
    bank.freeze()
    layer = WordExperts(bank)
    x = torch.randn(2, 5, 8, requires_grad=True)
    layer(x, ctx(torch.randint(17, 200, (2, 5)))).sum().backward()
    assert bank.w_in.grad is None and bank.w_out.grad is None and x.grad is not None


def test_shared_bank_is_one_parameter_set_in_the_checkpoint(tmp_path):
    class TwoLayers(nn.Module):
        def __init__(self):
            super().__init__()
            bank = WordExpertBank(128, 8, 4)
            self.enc = WordExperts(bank)
            self.dec = WordExperts(bank)

    m = TwoLayers()
    assert sum(p.numel() for p in m.parameters()) == 2 * 128 * 8 * 4  # counted once
    save_state(m, tmp_path / "w.safetensors")
    from safetensors.torch import load_file

    assert set(load_file(tmp_path / "w.safetensors")) == {"enc.bank.w_in", "enc.bank.w_out"}
    m2 = TwoLayers()
    m2.load_state_dict(read_state(tmp_path / "w.safetensors"))
    assert torch.equal(m2.dec.bank.w_in, m.enc.bank.w_in)


def test_missing_word_ids_is_a_clear_error():
    import pytest

    with pytest.raises(ValueError, match="needs word_ids"):
        WordExperts(WordExpertBank(8, 4, 2))(torch.randn(1, 2, 4), MixContext())


def test_mowe_model_shares_one_bank_and_round_trips(tmp_path):
    from frugalformers import build_model, count_parameters, load, save

    model = build_model("mowe-tiny", layer_ffns=("word_experts", "word_experts")).eval()
    banks = {id(layer.ffn.bank) for stack in (model.encoder, model.decoder) for layer in stack.layers[1:]}
    banks |= {id(model.encoder.layers[0].ffn.bank)}
    assert len(banks) == 1  # both encoder layers and the decoder's MoWE layer: one bank
    single = build_model("mowe-tiny", layer_ffns=("dense", "word_experts"))
    dense_ffn = sum(p.numel() for p in single.encoder.layers[0].ffn.parameters())
    assert count_parameters(model) == count_parameters(single) - dense_ffn  # the bank is counted once
    ids, words = torch.randint(0, 8192, (2, 16)), torch.randint(0, 400, (2, 16))
    save(model, tmp_path)
    again = load(tmp_path).eval()
    with torch.no_grad():
        a = model(ids, decoder_input_ids=ids, word_ids=words, decoder_word_ids=words).logits
        b = again(ids, decoder_input_ids=ids, word_ids=words, decoder_word_ids=words).logits
    assert torch.equal(a, b)
    assert again.encoder.layers[0].ffn.bank is again.encoder.layers[1].ffn.bank


def test_causal_word_ids_route_each_word_once_it_is_complete(demo_data):
    from frugalformers.train.batches import load_tokenizer

    tok = load_tokenizer("demo", "tiny")
    ids = tok.encode("the extraordinary film was unbelievably good")
    full, causal = tok.word_ids(ids), tok.causal_word_ids(ids)
    starts = [i for i, t in enumerate(ids) if tok.starts_word[t]] + [len(ids)]
    for s, e in zip(starts[:-1], starts[1:]):
        assert causal[e - 1] == full[e - 1]  # the word's last piece carries the word's id
        for t in range(s, e - 1):  # earlier pieces carry the id of their prefix (0 if not a word)
            assert causal[t] == tok.causal_word_ids(ids[s : t + 1])[-1]
    assert any(e - s > 1 for s, e in zip(starts[:-1], starts[1:]))  # the sentence has multi-piece words
    assert tok.causal_word_ids(ids[:3]).tolist() == causal[:3].tolist()  # left to right: no look-ahead
    assert [tok.last_word_id(ids[: t + 1]) for t in range(len(ids))] == causal.tolist()  # one step's id


def test_decoder_mowe_cached_generation_equals_full_recomputation(demo_data):
    import pytest

    from frugalformers import build_model
    from frugalformers.generate import generate
    from frugalformers.train.batches import load_tokenizer

    tok = load_tokenizer("demo", "tiny")
    torch.manual_seed(0)
    model = build_model("mowe-tiny", vocab_size=tok.vocab_size).eval()
    with torch.no_grad():  # make the shared bank matter
        model.encoder.layers[1].ffn.bank.w_out.mul_(50)
    prompt = tok.encode("the film was good and the music was extraordinary") + [tok.eos_id]
    words = [tok.word_ids(prompt).tolist()]
    dec_word = lambda h: int(tok.causal_word_ids(h)[-1])  # noqa: E731
    out = generate(model, [prompt], 6, word_ids=words, decoder_word_id=dec_word)[0]
    dec_in = [model.config.decoder_start_token_id] + out[:-1]
    with torch.no_grad():
        logits = model(
            torch.tensor([prompt]),
            decoder_input_ids=torch.tensor([dec_in]),
            word_ids=torch.tensor(words),
            decoder_word_ids=torch.tensor([tok.causal_word_ids(dec_in).tolist()]),
        ).logits
    assert logits[0].argmax(-1).tolist() == out
    with pytest.raises(ValueError, match="MoWE decoder layers: pass decoder_word_id"):
        generate(model, [prompt], 2, word_ids=words)


def test_autocast_dispatches_bf16_rows_and_returns_the_input_dtype():
    """Under autocast the routed rows reach the experts in bf16 (the CUDA grouped-GEMM path needs
    bf16 operands; the residual stream stays float32) and the output comes back in float32."""
    torch.manual_seed(0)
    layer = WordExperts(WordExpertBank(8, 16, 4), skip_top=2)
    x = torch.randn(2, 6, 16)
    ctx = MixContext(extras={"word_ids": torch.randint(0, 40, (2, 6))})
    seen = []
    layer._experts = lambda h, counts, f=layer._experts: seen.append(h.dtype) or f(h, counts)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x, ctx)
    assert seen == [torch.bfloat16] and y.dtype == torch.float32
    ref = layer(x, ctx)
    assert (y - ref).abs().max() < 2e-2 * ref.abs().max()


def test_grouped_path_runs_the_touched_experts_only(monkeypatch):
    """The grouped-GEMM dispatch (CUDA's path; torch >= 2.9 has a CPU kernel of the same contract)
    gathers the touched experts' weights, equals the per-token loop, and sends gradient to them only."""
    from frugalformers.nn import grouped_experts

    torch.manual_seed(0)
    layer = WordExperts(WordExpertBank(64, 16, 4), skip_top=2)
    x = torch.randn(2, 12, 16, requires_grad=True)
    ids = torch.randint(0, 30, (2, 12))
    ctx = MixContext(extras={"word_ids": ids})
    calls = []
    monkeypatch.setattr(grouped_experts, "grouped_mm_applies", lambda h, w: True)

    def grouped_mm(a, b, offs, real=torch._grouped_mm):
        calls.append(b.shape[0])
        return real(a, b, offs=offs)

    monkeypatch.setattr(torch, "_grouped_mm", grouped_mm)
    y = layer(x, ctx)
    touched = expert_of(ids[ids > 2], 64).unique()
    assert calls == [touched.numel(), touched.numel()]  # (U, ...) weights, not the whole bank
    torch.testing.assert_close(y, layer.reference_forward(x, ids))
    y.square().sum().backward()
    has_grad = layer.bank.w_in.grad.flatten(1).abs().sum(1) > 0
    assert torch.equal(has_grad.nonzero().squeeze(-1), touched)


def test_grouped_path_splits_more_experts_than_one_call_takes(monkeypatch):
    """CUDA's grouped GEMM takes at most 1024 groups per call (a 32K-expert bank touches more):
    the touched experts run as several calls of <= MAX_GROUPS groups, with the same output and
    gradients as the loop reference (MAX_GROUPS lowered to 3 here so the split happens on CPU)."""
    from frugalformers.nn import grouped_experts

    torch.manual_seed(0)
    layer = WordExperts(WordExpertBank(64, 16, 4), skip_top=2)
    x = torch.randn(2, 12, 16, requires_grad=True)
    ids = torch.randint(0, 30, (2, 12))
    ctx = MixContext(extras={"word_ids": ids})
    ref = layer.reference_forward(x, ids)
    g_ref = torch.autograd.grad(ref.square().sum(), (x, layer.bank.w_in, layer.bank.w_out))
    calls = []
    monkeypatch.setattr(grouped_experts, "grouped_mm_applies", lambda h, w: True)
    monkeypatch.setattr(grouped_experts, "MAX_GROUPS", 3)

    def grouped_mm(a, b, offs, real=torch._grouped_mm):
        calls.append(b.shape[0])
        return real(a, b, offs=offs)

    monkeypatch.setattr(torch, "_grouped_mm", grouped_mm)
    y = layer(x, ctx)
    touched = expert_of(ids[ids > 2], 64).unique().numel()
    assert touched > 6 and max(calls) == 3 and sum(calls) == 2 * touched
    torch.testing.assert_close(y, ref)
    g = torch.autograd.grad(y.square().sum(), (x, layer.bank.w_in, layer.bank.w_out))
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b)
