import copy
import json

import pytest
import torch

from frugalformers import build_model, load
from frugalformers.cli import main
from frugalformers.convert.gqa import convert_attention, convert_model, expand_model, pool_heads
from frugalformers.generate import generate
from frugalformers.nn.attention import Attention


def test_same_number_of_heads_is_the_identity():
    model = build_model("llama-tiny").eval()
    ids = torch.randint(0, 8192, (2, 9))
    with torch.no_grad():
        before = model(ids).logits
        after = convert_model(copy.deepcopy(model), 8)(ids).logits
    assert torch.equal(before, after)


@pytest.mark.parametrize("preset, stacks", [("llama-tiny-gqa4", "all"), ("llama-tiny-mqa", "all")])
def test_mean_pooling_an_expanded_model_is_exact(preset, stacks):
    gqa = build_model(preset).eval()
    ids = torch.randint(0, 8192, (2, 9))
    with torch.no_grad():
        ref = gqa(ids).logits
        mha = expand_model(copy.deepcopy(gqa))
        assert mha.config.kv_heads == 8
        assert (mha(ids).logits - ref).abs().max() <= 1e-5  # expanding is exact
        back = convert_model(mha, gqa.config.kv_heads, "mean", stacks)
        assert (back(ids).logits - ref).abs().max() <= 1e-5  # pooling identical heads is exact


def test_pooled_weights_are_the_hand_computed_means():
    attn = Attention(16, n_heads=4, bias=True)
    k, kb = attn.k.weight.detach().clone(), attn.k.bias.detach().clone()
    convert_attention(attn, 2, "mean")
    D = 4
    for g in range(2):
        heads = [k[h * D : (h + 1) * D] for h in (2 * g, 2 * g + 1)]  # contiguous groups
        assert torch.allclose(attn.k.weight[g * D : (g + 1) * D], (heads[0] + heads[1]) / 2)
        assert torch.allclose(
            attn.k.bias[g * D : (g + 1) * D],
            (kb[2 * g * D : (2 * g + 1) * D] + kb[(2 * g + 1) * D : (2 * g + 2) * D]) / 2,
        )
    assert attn.n_kv_heads == 2 and attn.k.weight.shape == (8, 16)


def test_first_and_random_methods():
    w = torch.arange(8.0).repeat_interleave(2).reshape(8, 2)  # 4 heads of D=2
    assert torch.equal(pool_heads(w, 4, 2, "first"), torch.cat([w[0:2], w[4:6]]))
    r = pool_heads(w, 4, 1, "random", torch.Generator().manual_seed(0))
    assert r.shape == (2, 2) and not torch.equal(r, w[:2])


def test_bad_group_count_is_a_clear_error():
    with pytest.raises(ValueError, match=r"n_kv_heads=3.*\[1, 2, 4, 8\]"):
        convert_model(build_model("llama-tiny"), 3)


def test_t5_converts_the_decoder_only_by_default():
    model = convert_model(build_model("t5-tiny"), 1)
    assert model.config.kv_heads == 1 and model.config.encoder_kv_heads == 4
    assert all(layer.mixer.n_kv_heads == 1 and layer.cross.n_kv_heads == 1 for layer in model.decoder.layers)
    assert all(layer.mixer.n_kv_heads == 4 for layer in model.encoder.layers)
    src = torch.randint(0, 8192, (2, 7))
    assert model(src, decoder_input_ids=src).logits.shape == (2, 7, 8192)


def test_hf_llama_folder_to_gqa_loads_in_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    hf = transformers.LlamaForCausalLM(
        transformers.LlamaConfig(
            vocab_size=99,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
        )
    ).eval()
    hf.save_pretrained(tmp_path / "mha")
    assert (
        main(
            [
                "convert",
                "gqa",
                str(tmp_path / "mha"),
                "--kv-heads",
                "2",
                "--format",
                "hf",
                "--out",
                str(tmp_path / "gqa"),
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "gqa/config.json").read_text())["num_key_value_heads"] == 2
    converted = transformers.LlamaForCausalLM.from_pretrained(str(tmp_path / "gqa")).eval()
    ours = convert_model(__import__("frugalformers.convert.hf", fromlist=["x"]).from_hf_model(hf), 2)
    ids = torch.randint(0, 99, (2, 11))
    with torch.no_grad():
        assert (converted(ids).logits - ours(ids).logits).abs().max() <= 1e-5


def test_convert_then_uptrain_reports_losses(tmp_path, demo_data, capsys):
    run = tmp_path / "mha"
    common = ["data.batch_size=8", "data.seq_len=32", "eval_batches=2", "log_every=5"]
    assert (
        main(
            [
                "train",
                "--preset",
                "llama-tiny",
                "--no-progress",
                "steps=20",
                "save_every=20",
                "eval_every=20",
                f"out={run}",
                *common,
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "convert",
                "gqa",
                str(run / "checkpoints/step-00000020"),
                "--kv-heads",
                "1",
                "--out",
                str(tmp_path / "mqa"),
            ]
        )
        == 0
    )
    assert load(tmp_path / "mqa").config.kv_heads == 1
    capsys.readouterr()
    assert (
        main(
            [
                "uptrain",
                str(tmp_path / "mqa"),
                "--original-run",
                str(run),
                "--alpha",
                "0.25",
                "--no-progress",
                f"out={tmp_path / 'up'}",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    report = json.loads(out[out.rindex("{\n") :])
    assert report["steps"] == 5 and report["kv_heads"] == 1
    assert {"loss_original", "loss_converted", "loss_uptrained"} <= set(report)
    up = tmp_path / "up"
    assert (up / "checkpoints/step-00000005").exists()  # 5% .. here 25% of 20 steps
    assert load(up / "checkpoints/step-00000005").config.kv_heads == 1
    # the uptrained MQA model, exported to Hugging Face format, generates what ours generates
    transformers = pytest.importorskip("transformers")
    hf_dir = tmp_path / "up-hf"
    argv = ["convert", "gqa", str(up / "checkpoints/step-00000005"), "--kv-heads", "1", "--format", "hf"]
    assert main([*argv, "--out", str(hf_dir)]) == 0
    assert json.loads((hf_dir / "config.json").read_text())["num_key_value_heads"] == 1
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(hf_dir)).eval()
    ours = load(up / "checkpoints/step-00000005").eval()
    prompt = [5, 17, 42, 99, 7]
    want = generate(ours, [prompt], 12)[0]
    assert len(set(want)) > 1  # a real continuation, not one token repeated
    with torch.no_grad():
        got = hf.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False, min_new_tokens=12)
    assert got[0, len(prompt) :].tolist() == want


def test_hf_gpt2_folder_converts_to_gqa_in_our_format(tmp_path, capsys):
    """GPT-2 (Conv1D weights, fused c_attn) imports exactly; its grouped version is written in our
    format (GPT-2's config has no kv-head setting) and equals mean-pooling the imported model."""
    transformers = pytest.importorskip("transformers")
    from frugalformers.convert.hf import from_hf_model, to_hf_model

    cfg = transformers.GPT2Config(
        vocab_size=99, n_embd=32, n_layer=2, n_head=4, n_positions=64, bos_token_id=0, eos_token_id=0
    )
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    hf.save_pretrained(tmp_path / "gpt2")
    ours = from_hf_model(hf).eval()
    ids = torch.randint(0, 99, (2, 11))
    with torch.no_grad():
        assert (hf(ids).logits - ours(ids).logits).abs().max() <= 1e-5
    assert main(["convert", "gqa", str(tmp_path / "gpt2"), "--kv-heads", "2", "--out", str(tmp_path / "g2")]) == 0
    assert "writing our format" in capsys.readouterr().out
    grouped = load(tmp_path / "g2").eval()
    assert grouped.config.kv_heads == 2
    with torch.no_grad():
        assert (grouped(ids).logits - convert_model(ours, 2)(ids).logits).abs().max() <= 1e-5
    with pytest.raises(ValueError, match="GPT-2 style.*--format ours"):
        to_hf_model(grouped)
