"""benchmarks/smollm2_mqa.py's parts on a tiny Llama (the script itself loads the real SmolLM2):
the windows it cuts, its schedule, and a run that is cut off and resumed without redoing steps."""

import argparse
import importlib.util
from pathlib import Path

import pytest
import torch

from frugalformers import build_model
from frugalformers.convert.gqa import convert_model

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("smollm2_mqa", ROOT / "benchmarks" / "smollm2_mqa.py")
smollm2_mqa = importlib.util.module_from_spec(spec)
spec.loader.exec_module(smollm2_mqa)


class Tok:  # one token per character, EOS = 0
    eos_token_id = 0

    def __call__(self, text):
        return argparse.Namespace(input_ids=[1 + ord(c) % 50 for c in text])


def test_windows_join_documents_with_eos_and_stop_at_the_count():
    w = smollm2_mqa.windows(Tok(), ["abc", "de", "fghij"], length=4, count=2)
    assert w.shape == (2, 4) and w[0, 3].item() == 0  # "abc" then EOS
    assert smollm2_mqa.windows(Tok(), ["ab"], length=4, count=5).shape == (0, 4)


def test_schedule_warms_up_then_decays_to_a_tenth():
    lrs = [smollm2_mqa.lr_at(s, 100, 1e-3, 10) for s in range(100)]
    assert lrs[0] == 1e-4 and max(lrs) == 1e-3 and abs(lrs[-1] - 1e-4) < 2e-6


def test_a_cut_off_run_resumes_where_it_stopped(tmp_path):
    torch.manual_seed(0)
    data = torch.randint(1, 200, (16, 8))
    args = argparse.Namespace(steps=2, batch=2, lr=1e-3, eval_every=1, device="cpu")
    logs = []
    model = convert_model(build_model("llama-tiny"), 1)
    first = smollm2_mqa.train("mqa", model, data, data[:4], args, 1e-3, tmp_path, logs.append)
    assert [c["step"] for c in first] == [1, 2]
    # cut off after step 2 of 4: the saved state is step 2's; the same run continues from there
    args.steps = 4
    smollm2_mqa.train("full", convert_model(build_model("llama-tiny"), 1), data, data[:4], args, 1e-3, tmp_path, print)
    state = torch.load(tmp_path / "full.state.pt", weights_only=False)
    state["step"], state["curve"] = 2, state["curve"][:2]
    torch.save(state, tmp_path / "full.state.pt")
    again = smollm2_mqa.train("full", convert_model(build_model("llama-tiny"), 1), data, data[:4], args, 1e-3, tmp_path,
                              logs.append)  # fmt: skip
    assert "full: resumed at step 2" in logs and [c["step"] for c in again] == [1, 2, 3, 4]
    # a run with other settings never continues another's state
    with pytest.raises(SystemExit, match="give another --work"):
        smollm2_mqa.train(
            "mqa", convert_model(build_model("llama-tiny"), 1), data, data[:4], args, 1e-3, tmp_path, print
        )
    with pytest.raises(SystemExit, match="give another --work"):  # nor one at another rate
        smollm2_mqa.train(
            "full", convert_model(build_model("llama-tiny"), 1), data, data[:4], args, 1e-4, tmp_path, print
        )
