"""How well a generative model predicts the gold answers, and how much of that it takes from its
input. Exact match moves only once the argmax answer changes, so a model on the plateau that
precedes a copy or lookup circuit (benchmarks/copy_plateau.py) scores the majority answer whatever
it has begun to learn; the teacher-forced loss of the gold answer moves before that.

`answer_loss` is the model's mean negative log-likelihood per gold answer token (the answer's
tokens and the EOS after them, as fine-tuning trains on them), teacher-forced, in nats. With
`other_input=True` every answer is scored behind the next row's input instead of its own (a
derangement of the split); in a task of two texts (`text_b`: retrieval's document, bible_match's
candidate passages) only the second text is the next row's and the first (the question, the
passage to match) stays. The difference between the two losses is what the model reads from the
input it swaps: the whole input of a one-text task, the document behind a question in a two-text
one. A model that has learned only which answers are common, or only what the question says,
reads nothing from the document.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def answer_loss(model, batches, split: str, limit: int | None = None, other_input: bool = False) -> float:
    """Mean teacher-forced NLL per gold answer token of `split` (its first `limit` rows), in nats;
    `other_input`: each answer behind the next row's input (the last row's behind the first's), or
    only the next row's second text where the rows have one (the module docstring).
    t5 (labels are the decoder targets) and decoder (labels mark the answer inside the sequence,
    predicted one position ahead) families."""
    family = model.config.family
    if family not in ("t5", "decoder"):
        raise ValueError(f"answer_loss scores generated answers; a {family} model classifies")
    items = batches.split_items(split)[:limit]  # (text ids, text_b ids, answer ids, label)
    if other_input:
        if len(items) < 2:
            raise ValueError(f"answer_loss(other_input=True) needs two rows or more; {split} has {len(items)}")
        pair = any(b for _, b, _, _ in items)  # swap the document and keep the question
        nxt = [items[(i + 1) % len(items)] for i in range(len(items))]
        items = [(a if pair else n[0], n[1], tgt, lab) for (a, _, tgt, lab), n in zip(items, nxt)]
    device = next(model.parameters()).device
    # 4 training batches a forward: without gradients that holds less than one training step does
    size = 4 * batches.batch_size
    total, count = 0.0, 0
    for i in range(0, len(items), size):
        b = {k: v.to(device) for k, v in batches.make(items[i : i + size]).items()}
        labels = b.pop("labels")  # (the model is not given them: it would compute a loss of its own)
        if family == "t5":  # the decoder inputs are the labels shifted right
            b["decoder_input_ids"] = model.shift_right(labels)
        logits = model(**b).logits.float()  # (B, T, V)
        if family == "decoder":  # position j predicts token j + 1
            logits, labels = logits[:, :-1], labels[:, 1:]
        total += float(F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100, reduction="sum"))
        count += int((labels != -100).sum())
    return total / max(count, 1)


def answer_losses(model, batches, split: str, limit: int | None = None) -> dict[str, float]:
    """`answer_loss` behind the rows' own inputs and behind the next rows' (`answer_loss`,
    `answer_loss_other_input`) for a generative model and two rows or more; {} otherwise (a
    classifier, or nothing to swap with)."""
    if model.config.family not in ("t5", "decoder") or len(batches.split_items(split)[:limit]) < 2:
        return {}
    return {
        "answer_loss": answer_loss(model, batches, split, limit),
        "answer_loss_other_input": answer_loss(model, batches, split, limit, other_input=True),
    }
