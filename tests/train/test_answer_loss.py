"""The answer loss of a fine-tuned generative model, behind its own input and another row's
(train/answer_loss.py)."""

import pytest
import torch

from frugalformers.api import build_model
from frugalformers.presets import get_preset
from frugalformers.train.answer_loss import answer_loss, answer_losses
from frugalformers.train.batches import TaskBatches, load_tokenizer


def _batches(preset, demo_data, rows, batch_size):
    tok = load_tokenizer(str(demo_data), "tiny")
    model = build_model(get_preset(preset).replace(vocab_size=tok.vocab_size))
    return model, TaskBatches(model.config, {"train": rows}, [], tok, 24, 6, batch_size, 0)


@pytest.mark.parametrize("preset", ["t5-tiny", "llama-tiny"])
def test_answer_loss_is_the_models_loss_on_the_answers(preset, demo_data):
    rows = [{"text": f"the film number {i} was", "label": ["good", "very bad indeed", "fine"][i % 3]} for i in range(6)]
    model, batches = _batches(preset, demo_data, rows, 6)
    model.eval()
    with torch.no_grad():
        want = float(model(**batches.make(batches.split_items("train"))).loss)  # one batch: the mean over tokens
    assert answer_loss(model, batches, "train") == pytest.approx(want, rel=1e-5)
    # scored 4 training batches at a time: at batch size 1, forwards of 4 and 2 rows; the mean is
    # over all answer tokens, not a mean of the forwards' means
    model2, batches2 = _batches(preset, demo_data, rows, 1)
    model2.load_state_dict(model.state_dict())
    model2.eval()
    assert answer_loss(model2, batches2, "train") == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("preset", ["t5-tiny", "llama-tiny"])
def test_other_input_scores_each_answer_behind_the_next_rows_input(preset, demo_data):
    rows = [
        {"text": f"question {i} about the film", "label": ["good", "very bad indeed", "fine"][i % 3]} for i in range(5)
    ]
    model, batches = _batches(preset, demo_data, rows, 2)
    model.eval()
    swapped = [{"text": rows[(i + 1) % 5]["text"], "label": rows[i]["label"]} for i in range(5)]
    _, by_hand = _batches(preset, demo_data, swapped, 2)
    got = answer_loss(model, batches, "train", other_input=True)
    assert got == pytest.approx(answer_loss(model, by_hand, "train"), rel=1e-6)
    assert got != pytest.approx(answer_loss(model, batches, "train"), rel=1e-6)  # the inputs matter
    assert answer_loss(model, batches, "train", limit=3, other_input=True) != pytest.approx(got, rel=1e-6)
    with pytest.raises(ValueError, match="two rows or more"):
        answer_loss(model, batches, "train", limit=1, other_input=True)


def test_other_input_of_a_two_text_task_swaps_the_document_and_keeps_the_question(demo_data):
    rows = [{"text": f"which word follows {w}?", "text_b": f"a document where {w} is then {a}", "label": a}
            for w, a in (("red", "blue"), ("cat", "dog"), ("sun", "moon"), ("one", "two"))]  # fmt: skip
    model, batches = _batches("t5-tiny", demo_data, rows, 3)
    model.eval()
    swapped = [{**r, "text_b": rows[(i + 1) % 4]["text_b"]} for i, r in enumerate(rows)]
    _, by_hand = _batches("t5-tiny", demo_data, swapped, 3)
    assert answer_loss(model, batches, "train", other_input=True) == pytest.approx(
        answer_loss(model, by_hand, "train"), rel=1e-6
    )


def test_answer_loss_refuses_a_classifier(demo_data):
    model, batches = _batches("bert-tiny", demo_data, [{"text": "a", "label": "x"}], 1)
    with pytest.raises(ValueError, match="classifies"):
        answer_loss(model, batches, "train")


def test_answer_losses_both_for_a_generator_none_for_a_classifier_or_one_row(demo_data):
    rows = [{"text": f"question {i}", "label": ["yes", "no"][i % 2]} for i in range(3)]
    model, batches = _batches("t5-tiny", demo_data, rows, 2)
    model.eval()
    both = answer_losses(model, batches, "train")
    assert both == {
        "answer_loss": answer_loss(model, batches, "train"),
        "answer_loss_other_input": answer_loss(model, batches, "train", other_input=True),
    }
    assert answer_losses(model, batches, "train", limit=1) == {}  # nothing to swap with
    classifier, batches = _batches("bert-tiny", demo_data, rows, 2)
    assert answer_losses(classifier, batches, "train") == {}
