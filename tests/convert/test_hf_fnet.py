import pytest
import torch

transformers = pytest.importorskip("transformers")

from frugalformers.convert.hf import from_hf_model, to_hf_model  # noqa: E402


def fnet_config(**kw):
    return transformers.FNetConfig(
        vocab_size=99, hidden_size=32, num_hidden_layers=2, intermediate_size=64, max_position_embeddings=24, **kw
    )


@pytest.mark.parametrize(
    "cls, key",
    [
        ("FNetModel", "last_hidden_state"),
        ("FNetForMaskedLM", "logits"),
        ("FNetForSequenceClassification", "logits"),
    ],
)
def test_fnet_parity_and_export(cls, key):
    hf = getattr(transformers, cls)(fnet_config(num_labels=3)).eval()
    ours = from_hf_model(hf).eval()
    ids, tt = torch.randint(0, 99, (3, 24)), torch.randint(0, 4, (3, 24))
    with torch.no_grad():
        a = hf(ids, token_type_ids=tt)
        b = ours(ids, token_type_ids=tt)
        ours_value = b.hidden if key == "last_hidden_state" else b.logits
        assert (getattr(a, key) - ours_value).abs().max() <= 1e-5
        back = to_hf_model(ours).eval()
        assert torch.equal(getattr(back(ids, token_type_ids=tt), key), getattr(a, key))
    assert ours.config.mixer == "fourier" and ours.config.embedding_projection
