import json
import os

import pytest
import torch
from safetensors.torch import load_file

from frugalformers import CheckpointError, build_model, load, save
from frugalformers.api import example_inputs
from frugalformers.checkpoint import WEIGHTS, save_state


@pytest.mark.parametrize("name", ["bert-tiny", "t5-tiny", "llama-tiny-gqa4"])
def test_round_trip_is_identical(tmp_path, name):
    model = build_model(name).eval()
    save(model, tmp_path)
    again = load(tmp_path).eval()
    inputs = example_inputs(model.config, 2, 12)
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, again(**inputs).logits)
    assert again.config == model.config
    assert sorted(os.listdir(tmp_path)) == ["config.json", "model.safetensors"]  # no temp files left


def test_missing_unexpected_and_misshaped_are_named(tmp_path):
    model = build_model("bert-tiny")
    save(model, tmp_path)
    state = load_file(tmp_path / WEIGHTS)
    state.pop("encoder.layers.1.ffn.w_in.weight")
    state["encoder.layers.0.extra"] = torch.zeros(1)
    state["mlm.bias"] = torch.zeros(3)
    from safetensors.torch import save_file

    save_file(state, tmp_path / WEIGHTS)
    with pytest.raises(CheckpointError) as err:
        load(tmp_path)
    msg = str(err.value)
    assert "encoder.layers.1.ffn.w_in.weight" in msg and "encoder.layers.0.extra" in msg and "mlm.bias" in msg


def test_truncated_weights_give_clear_error(tmp_path):
    save(build_model("bert-tiny"), tmp_path)
    path = tmp_path / WEIGHTS
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load(tmp_path)


def test_config_mismatch_names_field(tmp_path):
    save(build_model("bert-tiny"), tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["n_heds"] = 3
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="n_heds"):
        load(tmp_path)


def test_shared_tensors_are_stored_once(tmp_path):
    class Shared(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Linear(4, 4)
            self.b = self.a  # one bank referenced from two places

    m = Shared()
    save_state(m, tmp_path / "w.safetensors")
    assert set(load_file(tmp_path / "w.safetensors")) == {"a.weight", "a.bias"}
    from frugalformers.checkpoint import load_state_strict, read_state

    m2 = Shared()
    load_state_strict(m2, read_state(tmp_path / "w.safetensors"))
    assert torch.equal(m2.a.weight, m.a.weight)


def test_failed_write_leaves_previous_checkpoint(tmp_path, monkeypatch):
    model = build_model("bert-tiny")
    save(model, tmp_path)
    before = (tmp_path / WEIGHTS).read_bytes()
    import frugalformers.checkpoint as ck

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(ck, "save_file", boom)
    with pytest.raises(OSError):
        save(build_model("bert-tiny"), tmp_path)
    assert (tmp_path / WEIGHTS).read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["config.json", "model.safetensors"]
