"""Pretraining objectives as collators over token ids.

- `mlm_mask`: BERT / FNet masked LM: 15% of the real tokens (at most 80 per sequence, as in FNet's
  code), of which 80% become [MASK], 10% a random token, 10% stay.
- `span_corruption`: T5 (Raffel et al. 2020): noise density 0.15, mean span 3; each noise span is
  replaced by one sentinel in the input; the target lists sentinel + span for every span, then EOS.
- `ul2_example`: the UL2 mixture CoLT5 pre-trains with: prefix LM (noise 0.5) and span corruption
  with mean spans 3, 8 and 64 at noise 0.15, in equal shares.
- `causal_lm`: next-token prediction (the model shifts labels inside); padding is ignored.
"""

from __future__ import annotations

import random

import torch

from frugalformers.data.shards import pad_batch


def mlm_mask(
    ids: torch.Tensor,
    mask_id: int,
    vocab_size: int,
    special_ids: set[int] | frozenset[int],
    rate: float = 0.15,
    max_predictions: int = 80,
    generator: torch.Generator | None = None,
    first_regular_id: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, labels) for ids (B, T). Exactly `min(max_predictions, max(1, round(rate * n)))`
    positions per row are predicted, n being the row's non-special tokens; labels are -100 elsewhere."""
    B, T = ids.shape
    special = torch.zeros(vocab_size, dtype=torch.bool)
    special[list(special_ids)] = True
    candidate = ~special[ids]  # (B, T)
    n_cand = candidate.sum(1)
    n_pred = torch.clamp(torch.round(n_cand.float() * rate).long(), min=1, max=max_predictions)
    n_pred = torch.minimum(n_pred, n_cand)
    scores = torch.rand((B, T), generator=generator).masked_fill(~candidate, 2.0)
    rank = scores.argsort(1).argsort(1)  # rank of each position's score within its row
    chosen = rank < n_pred[:, None]  # (B, T): the n_pred lowest scores among candidates
    labels = ids.masked_fill(~chosen, -100)
    action = torch.rand((B, T), generator=generator)
    inputs = ids.clone()
    inputs[chosen & (action < 0.8)] = mask_id
    lo = max(first_regular_id, max(special_ids) + 1 if special_ids else 0)
    random_tokens = torch.randint(lo, vocab_size, (B, T), generator=generator)
    swap = chosen & (action >= 0.8) & (action < 0.9)
    inputs[swap] = random_tokens[swap]
    return inputs, labels


def _random_segmentation(rng: random.Random, n_items: int, n_segments: int) -> list[int]:
    """Split n_items into n_segments positive lengths, uniformly at random (T5's algorithm)."""
    cuts = sorted(rng.sample(range(1, n_items), n_segments - 1)) if n_segments > 1 else []
    bounds = [0, *cuts, n_items]
    return [b - a for a, b in zip(bounds[:-1], bounds[1:])]


def noise_spans(length: int, noise_density: float, mean_span: float, rng: random.Random) -> list[tuple[int, int]]:
    """[(start, end)] noise spans over `length` tokens: round(length * density) noise tokens in
    round(noise / mean_span) spans, alternating with non-noise spans (input starts with non-noise)."""
    n_noise = min(max(int(round(length * noise_density)), 1), length - 1)
    n_spans = max(1, min(int(round(n_noise / mean_span)), n_noise, length - n_noise))
    noise = _random_segmentation(rng, n_noise, n_spans)
    keep = _random_segmentation(rng, length - n_noise, n_spans)
    spans, pos = [], 0
    for k, n in zip(keep, noise):
        pos += k
        spans.append((pos, pos + n))
        pos += n
    return spans


def span_corruption(
    ids: list[int],
    sentinel_ids: list[int],
    eos_id: int,
    rng: random.Random,
    noise_density: float = 0.15,
    mean_span: float = 3.0,
    words: list[int] | None = None,
):
    """(input, target) token lists for one sequence (T5 span corruption). With `words` (the routing
    ids aligned with `ids`, for MoWE) also the input's routing ids: kept tokens keep theirs,
    sentinels and EOS get 0, so a dropped span never reveals its words."""
    if len(ids) < 2:
        raise ValueError(f"span corruption needs at least 2 tokens, got {len(ids)}")
    spans = noise_spans(len(ids), noise_density, mean_span, rng)
    if len(spans) > len(sentinel_ids):
        raise ValueError(f"{len(spans)} noise spans but only {len(sentinel_ids)} sentinels; shorten the sequence")
    inputs, targets, in_words, pos = [], [], [], 0
    for i, (s, e) in enumerate(spans):
        inputs += ids[pos:s] + [sentinel_ids[i]]
        targets += [sentinel_ids[i]] + ids[s:e]
        if words is not None:
            in_words += words[pos:s] + [0]
        pos = e
    inputs += ids[pos:] + [eos_id]
    targets += [eos_id]
    if words is None:
        return inputs, targets
    return inputs, targets, in_words + words[pos:] + [0]


def reconstruct(inputs: list[int], targets: list[int], sentinel_ids: list[int], eos_id: int) -> list[int]:
    """Undo `span_corruption`: put each target span back at its sentinel (used by tests)."""
    index = {s: i for i, s in enumerate(sentinel_ids)}
    spans: dict[int, list[int]] = {}
    current = None
    for t in targets:
        if t in index:
            current = index[t]
            spans[current] = []
        elif t != eos_id and current is not None:
            spans[current].append(t)
    out = []
    for t in inputs:
        if t in index:
            out += spans[index[t]]
        elif t != eos_id:
            out.append(t)
    return out


UL2_DENOISERS = (("prefix", 0.5, 0.0), ("span", 0.15, 3.0), ("span", 0.15, 8.0), ("span", 0.15, 64.0))


def ul2_example(
    ids: list[int], sentinel_ids: list[int], eos_id: int, rng: random.Random, words: list[int] | None = None
):
    """One UL2 example: a denoiser drawn uniformly from `UL2_DENOISERS`. The prefix LM cuts at a
    uniform point with the expected target share = 0.5 (the paper's noise 0.5). Returns
    (input, target, kind), plus the input's routing ids when `words` is given."""
    kind, density, mean = rng.choice(UL2_DENOISERS)
    if kind == "prefix":
        cut = rng.randint(1, len(ids) - 1)
        out = (ids[:cut] + [eos_id], ids[cut:] + [eos_id], "prefix")
        return out if words is None else (*out, words[:cut] + [0])
    mean = min(mean, max(1.0, len(ids) * density))  # a 64-token mean span needs a long enough input
    if words is None:
        inp, tgt = span_corruption(ids, sentinel_ids, eos_id, rng, density, mean)
        return inp, tgt, f"span{int(mean)}"
    inp, tgt, w = span_corruption(ids, sentinel_ids, eos_id, rng, density, mean, words)
    return inp, tgt, f"span{int(mean)}", w


def seq2seq_batch(pairs: list[tuple[list[int], list[int]]], pad_id: int, in_len: int, out_len: int) -> dict:
    """Pad (input, target) pairs to static lengths; labels are -100 on padding."""
    inputs, in_mask = pad_batch([p[0] for p in pairs], pad_id, in_len)
    targets, out_mask = pad_batch([p[1] for p in pairs], pad_id, out_len)
    return {"input_ids": inputs, "attention_mask": in_mask, "labels": targets.masked_fill(out_mask == 0, -100)}


def causal_lm(ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    labels = ids if attention_mask is None else ids.masked_fill(attention_mask == 0, -100)
    return {"input_ids": ids, "labels": labels}
