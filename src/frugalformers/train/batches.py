"""Batch sources for training: pretraining objectives over token shards, fine-tuning tasks.

A batch source has `next_batch() -> dict` (model inputs + labels), `state_dict()` /
`load_state_dict()` (the loader position; randomness of the objectives is derived from it, so a
resumed run sees the same batches), and `eval_batches(n)` (a fixed validation sequence).
"""

from __future__ import annotations

import random

import torch

from frugalformers.data.objectives import causal_lm, mlm_mask, seq2seq_batch, span_corruption, ul2_example
from frugalformers.data.shards import TokenLoader, open_shard, pad_batch
from frugalformers.data.store import dataset_folder  # noqa: F401  (re-exported)
from frugalformers.data.tokenizer import Tokenizer, load_tokenizer  # noqa: F401  (re-exported)

DEFAULT_OBJECTIVE = {"bert": "mlm", "t5": "span", "decoder": "clm"}


def _generators(seed: int, epoch: int, position: int) -> tuple[random.Random, torch.Generator]:
    key = (seed * 1_000_003 + epoch) * 1_000_033 + position
    return random.Random(key), torch.Generator().manual_seed(key % (2**63))


class PretrainBatches:
    def __init__(
        self,
        family: str,
        objective: str,
        dataset: str,
        tokenizer: str,
        seq_len: int,
        target_len: int,
        batch_size: int,
        seed: int,
        vocab_size: int,
        word_ids: bool = False,
        decoder_words: bool = False,
        mlm_rate: float = 0.15,
    ):
        """word_ids: also yield the inputs' routing ids (MoWE encoders; T5 objectives only);
        decoder_words: the decoder inputs' causal routing ids (MoWE decoder layers)."""
        self.objective = DEFAULT_OBJECTIVE[family] if objective == "auto" else objective
        allowed = {"bert": ("mlm",), "t5": ("span", "ul2"), "decoder": ("clm",)}[family]
        if self.objective not in allowed:
            raise ValueError(f"objective={self.objective!r} does not fit family {family!r}; use one of {allowed}")
        folder = dataset_folder(dataset)
        # a mixture (`frugal data mix`) names its base's tokenizer, DATASET/NAME: shards/DATASET/NAME
        self.tok = load_tokenizer(dataset, tokenizer)
        if self.tok.vocab_size > vocab_size:
            raise ValueError(
                f"the {tokenizer!r} tokenizer has {self.tok.vocab_size} pieces but the model's vocab_size is "
                f"{vocab_size}; set model.vocab_size={self.tok.vocab_size} or pick a matching tokenizer"
            )
        shards = folder / "shards" / tokenizer
        self.train_tokens, self.train_words, _ = open_shard(shards, "train")
        self.valid_tokens, self.valid_words, _ = open_shard(shards, "valid")
        self.word_ids, self.decoder_words = word_ids, decoder_words
        if decoder_words and self.objective not in ("span", "ul2"):
            raise ValueError(f"decoder MoWE layers need a T5 objective (span / ul2), not {self.objective!r}")
        if word_ids and (self.train_words is None or self.objective not in ("span", "ul2")):
            raise ValueError(
                f"word ids (MoWE) need T5 span / UL2 objectives and shards with routing ids; "
                f"objective={self.objective!r}; shards {shards}: "
                f"{'have' if self.train_words is not None else 'lack'} them"
            )
        self.seq_len, self.target_len, self.batch_size, self.seed = seq_len, target_len, batch_size, seed
        self.vocab_size, self.mlm_rate = vocab_size, mlm_rate
        self.loader = TokenLoader(
            self.train_tokens,
            seq_len,
            batch_size,
            seed,
            words=self.train_words if word_ids else None,
        )

    def _make(self, ids: torch.Tensor, rng: random.Random, gen: torch.Generator, words=None) -> dict:
        t = self.tok
        if self.objective == "mlm":
            # at most 80 predictions per 512 tokens (FNet's code), scaled with the rate and the length
            cap = max(80, round(80 * self.mlm_rate / 0.15 * ids.shape[1] / 512))
            inputs, labels = mlm_mask(ids, t.mask_id, self.vocab_size, t.special_ids, self.mlm_rate, cap, generator=gen)
            return {"input_ids": inputs, "labels": labels}
        if self.objective == "clm":
            return causal_lm(ids)
        pairs, in_words = [], []
        word_rows = words.tolist() if words is not None else [None] * len(ids)
        for row, wrow in zip(ids.tolist(), word_rows):
            if self.objective == "span":
                out = span_corruption(row, t.sentinel_ids, t.eos_id, rng, words=wrow)
            else:
                out = ul2_example(row, t.sentinel_ids, t.eos_id, rng, words=wrow)
                out = out[:2] + out[3:]  # drop the denoiser name
            pairs.append((out[0][: self.seq_len], out[1][: self.target_len]))
            if wrow is not None:
                in_words.append(out[2][: self.seq_len])
        batch = seq2seq_batch(pairs, t.pad_id, self.seq_len, self.target_len)
        if words is not None:
            batch["word_ids"] = pad_batch(in_words, 0, self.seq_len)[0]
        if self.decoder_words:
            batch["decoder_word_ids"] = decoder_word_ids(t, [p[1] for p in pairs], self.target_len)
        return batch

    def next_batch(self) -> dict:
        rng, gen = _generators(self.seed, self.loader.epoch, self.loader.position)
        b = self.loader.next_batch()
        return self._make(b["input_ids"], rng, gen, b.get("word_ids"))

    def eval_batches(self, n: int) -> list[dict]:
        words = self.valid_words if self.word_ids else None
        loader = TokenLoader(self.valid_tokens, self.seq_len, self.batch_size, seed=0, shuffle=False, words=words)
        out = []
        for i in range(min(n, loader.batches_per_epoch)):
            rng, gen = _generators(12345, 0, i)
            b = loader.next_batch()
            out.append(self._make(b["input_ids"], rng, gen, b.get("word_ids")))
        return out

    def state_dict(self) -> dict:
        return self.loader.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.loader.load_state_dict(state)

    @property
    def tokens_per_batch(self) -> int:
        return self.batch_size * self.seq_len


def decoder_word_ids(tok: Tokenizer, targets: list[list[int]], length: int) -> torch.Tensor:
    """Routing ids of the decoder inputs (the targets shifted right behind the start token, which
    is special and so unrouted), causal: `Tokenizer.causal_word_ids`. (B, length), 0-padded."""
    rows = [tok.causal_word_ids([tok.pad_id] + list(t[: length - 1])).tolist() for t in targets]
    return pad_batch(rows, 0, length)[0]


def pretrain_batches(cfg, model_config) -> PretrainBatches:
    """The pretraining batches a run config asks for, for a model with `model_config`."""
    d = cfg.data
    return PretrainBatches(
        model_config.family,
        cfg.objective,
        d.dataset,
        d.tokenizer,
        d.seq_len,
        d.target_len,
        d.batch_size,
        cfg.seed,
        model_config.vocab_size,
        word_ids=model_config.routes_words(),
        decoder_words=model_config.routes_decoder_words(),
        mlm_rate=d.mlm_rate,
    )


class TaskBatches:
    """Fine-tuning rows -> batches for the model's family.

    - bert: `[CLS] text [SEP] text_b [SEP]` padded to seq_len, token types, classification labels;
    - t5: text-to-text, input `text [SEP] text_b`, target the label string + EOS;
    - decoder: `text [SEP] text_b [SEP] label EOS`, loss on the label tokens only.
    """

    def __init__(
        self,
        model_config,
        rows: dict[str, list[dict]],
        labels: list[str],
        tok: Tokenizer,
        seq_len: int,
        target_len: int,
        batch_size: int,
        seed: int,
    ):
        self.family, self.rows, self.labels, self.tok = model_config.family, rows, labels, tok
        self.word_ids = model_config.routes_words()  # MoWE: the sources' routing ids too
        self.decoder_words = model_config.routes_decoder_words()  # MoWE decoder: the decoder inputs' too
        self.label_index = {lab: i for i, lab in enumerate(labels)}
        self.seq_len, self.target_len, self.batch_size, self.seed = seq_len, target_len, batch_size, seed
        self.encoded = {split: self._encode(r) for split, r in rows.items()}
        n = len(self.encoded.get("train", ()))  # (evaluation and prediction bring no training split)
        if "train" in self.encoded and n < batch_size:
            raise ValueError(
                f"{n} training rows are fewer than one batch of data.batch_size={batch_size}; "
                f"lower data.batch_size to {max(1, n)} or less, or add rows"
            )
        self.epoch, self.position = 0, 0

    def _encode(self, rows: list[dict]) -> list[tuple]:
        if not rows:
            return []
        t = self.tok
        texts = t.encode([r["text"] for r in rows])
        texts_b = t.encode([r.get("text_b", "") for r in rows])
        targets = t.encode([r.get("label", "") for r in rows])
        return [(a, b, tgt, r.get("label")) for a, b, tgt, r in zip(texts, texts_b, targets, rows)]

    def _bert(self, items) -> dict:
        t, T = self.tok, self.seq_len
        seqs, types = [], []
        for a, b, _, _ in items:
            room = T - 3 if b else T - 2
            if b:
                b = b[: max(room // 2, room - len(a))]
                a = a[: room - len(b)]
                s = [t.cls_id, *a, t.sep_id, *b, t.sep_id]
                types.append([0] * (len(a) + 2) + [1] * (len(b) + 1))
            else:
                s = [t.cls_id, *a[:room], t.sep_id]
                types.append([0] * len(s))
            seqs.append(s)
        ids, mask = pad_batch(seqs, t.pad_id, T)
        tt, _ = pad_batch(types, 0, T)
        labels = torch.tensor([self.label_index.get(lab, -100) for *_, lab in items])
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": tt, "labels": labels}

    def _source(self, a, b) -> list[int]:
        return (a + [self.tok.sep_id] + b) if b else a

    def _t5(self, items) -> dict:
        eos = self.tok.eos_id
        pairs = [
            (self._source(a, b)[: self.seq_len - 1] + [eos], tgt[: self.target_len - 1] + [eos])
            for a, b, tgt, _ in items
        ]
        batch = seq2seq_batch(pairs, self.tok.pad_id, self.seq_len, self.target_len)
        if self.word_ids:  # MoWE: the routing ids of the source's words
            batch["word_ids"] = pad_batch([self.tok.word_ids(p[0]).tolist() for p in pairs], 0, self.seq_len)[0]
        if self.decoder_words:  # MoWE decoder layers: causal routing ids of the decoder inputs
            batch["decoder_word_ids"] = decoder_word_ids(self.tok, [p[1] for p in pairs], self.target_len)
        return batch

    def _decoder(self, items) -> dict:
        seqs, label_masks = [], []
        for a, b, tgt, _ in items:
            answer = tgt[: self.target_len - 1] + [self.tok.eos_id]
            prompt = self._source(a, b)[: self.seq_len - len(answer) - 1] + [self.tok.sep_id]
            seqs.append(prompt + answer)
            label_masks.append([0] * len(prompt) + [1] * len(answer))
        ids, mask = pad_batch(seqs, self.tok.pad_id, self.seq_len)
        lm, _ = pad_batch(label_masks, 0, self.seq_len)
        return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(lm == 0, -100)}

    def make(self, items) -> dict:
        return {"bert": self._bert, "t5": self._t5, "decoder": self._decoder}[self.family](items)

    def next_batch(self) -> dict:
        train = self.encoded["train"]
        per_epoch = len(train) // self.batch_size
        if self.position >= per_epoch:
            self.epoch, self.position = self.epoch + 1, 0
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(self.seed * 7919 + self.epoch))
        idx = order[self.position * self.batch_size : (self.position + 1) * self.batch_size].tolist()
        self.position += 1
        return self.make([train[i] for i in idx])

    def split_items(self, split: str) -> list[tuple]:
        return self.encoded[split]

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position = state["epoch"], state["position"]

    @property
    def tokens_per_batch(self) -> int:
        return self.batch_size * self.seq_len
