"""`rescale_embeddings`: a pretrained encoder's embedding tables scaled back to init_std before
fine-tuning, with the function unchanged (the tables feed a LayerNorm)."""

import pytest
import torch

from frugalformers import build_model, checkpoint
from frugalformers.presets import get_preset
from frugalformers.train.config import load_run_config
from frugalformers.train.run import finetuned_model


def _grown(preset: str, factor: float = 5.0):
    """A preset's MLM model whose embedding tables are `factor` times their initial scale, as
    pretraining leaves them."""
    torch.manual_seed(0)
    model = build_model(get_preset(preset)).eval()
    emb = model.encoder.embeddings
    with torch.no_grad():
        for table in (emb.word.weight, emb.position.weight, emb.token_type.weight):
            table.mul_(factor)
    return model


@pytest.mark.parametrize("preset", ["bert-tiny", "fnet-tiny", "sparse-mixer-tiny"])
def test_rescale_keeps_the_function_and_restores_the_initial_scale(preset):
    model = _grown(preset)
    ids = torch.randint(0, model.config.vocab_size, (2, model.config.max_seq_len))
    before = model.encoder(ids).hidden
    c = model.encoder.embeddings.rescale_(model.config.init_std)
    assert c == pytest.approx(0.2, rel=0.05)
    assert model.encoder.embeddings.word.weight.std().item() == pytest.approx(model.config.init_std, rel=1e-4)
    after = model.encoder(ids).hidden
    assert torch.allclose(before, after, atol=1e-5), (before - after).abs().max()


def test_rescale_never_scales_up():
    torch.manual_seed(0)
    model = build_model(get_preset("bert-tiny"))
    word = model.encoder.embeddings.word.weight.detach().clone()
    assert model.encoder.embeddings.rescale_(1.0) == 1.0
    assert torch.equal(model.encoder.embeddings.word.weight, word)


def test_finetuning_from_a_checkpoint_rescales_only_when_asked(tmp_path):
    grown = _grown("bert-tiny")
    checkpoint.save(grown, tmp_path / "pre")
    ids = torch.randint(0, grown.config.vocab_size, (2, 16))
    for flag, expected_std in (("false", 5 * 0.02), ("true", 0.02)):
        cfg = load_run_config("bert-tiny", None, [f"init_from={tmp_path / 'pre'}", f"rescale_embeddings={flag}"])
        logged = []
        model = finetuned_model(cfg, ["neg", "pos"], logged.append).eval()
        assert model.encoder.embeddings.word.weight.std().item() == pytest.approx(expected_std, rel=0.05)
        assert torch.allclose(model.encoder(ids).hidden, grown.encoder(ids).hidden, atol=1e-5)
        assert any("rescale_embeddings" in m for m in logged) == (flag == "true")


def test_rescale_refuses_a_model_without_encoder_embeddings(tmp_path):
    checkpoint.save(build_model(get_preset("t5-tiny")), tmp_path / "t5")
    cfg = load_run_config("t5-tiny", None, [f"init_from={tmp_path / 't5'}", "rescale_embeddings=true"])
    with pytest.raises(ValueError, match="rescale_embeddings=true is for encoders"):
        finetuned_model(cfg, [], lambda *_: None)
