"""BERT family: post-LayerNorm encoders (BERT, FNet, Sparse Mixer) with MLM and classification heads.

Embeddings follow FNet's `EmbeddingLayer` (and BERT's): word + learned position + token type,
LayerNorm, an optional Dense d_emb -> d_model projection, dropout.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from frugalformers.config import ModelConfig
from frugalformers.models.layers import PostNormLayer, PreNormLayer
from frugalformers.models.outputs import ModelOutput, add_aux
from frugalformers.models.recipe import MixContext
from frugalformers.nn.ffn import activation_fn
from frugalformers.nn.positions import LearnedPositions


class BertEmbeddings(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        d_emb = config.embedding_dim
        self.word = nn.Embedding(config.vocab_size, d_emb, padding_idx=None)
        self.position = LearnedPositions(config.max_seq_len, d_emb)
        self.token_type = nn.Embedding(config.type_vocab_size, d_emb) if config.type_vocab_size else None
        self.norm = nn.LayerNorm(d_emb, eps=config.norm_eps)
        self.projection = nn.Linear(d_emb, config.d_model) if config.embedding_projection else None
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        B, T = input_ids.shape
        x = self.word(input_ids) + self.position(T)  # (B, T, d_emb)
        if self.token_type is not None:
            if token_type_ids is None:
                x = x + self.token_type.weight[0]
            else:
                x = x + self.token_type(token_type_ids)
        x = self.norm(x)
        if self.projection is not None:
            x = self.projection(x)  # (B, T, d_model)
        return self.dropout(x)

    @torch.no_grad()
    def rescale_(self, std: float) -> float:
        """Scale the word, position and token-type tables by one factor c so that the word table's
        standard deviation is `std` (never up: c <= 1); returns c. The three are summed and then
        LayerNorm-ed, and LayerNorm(c v) = LayerNorm(v), so the model computes the same function.
        What changes is how far Adam moves them: its steps have a fixed size per weight, so a table
        that pretraining has grown (each step lengthens a weight that feeds a norm) turns more slowly
        by 1/c. Fine-tuning from such a checkpoint with the tables back at their initial scale gives
        them a fresh model's effective rate (Arora et al. 2019, "Theoretical Analysis of Auto
        Rate-Tuning by Batch Normalization", for the same effect of scale-invariant weights)."""
        c = min(1.0, std / self.word.weight.std().item())
        tables = [self.word.weight, self.position.weight]
        if self.token_type is not None:
            tables.append(self.token_type.weight)
        for table in tables:
            table.mul_(c)
        return c


class BertEncoder(nn.Module):
    """Embeddings, a stack of post-LN layers (pre-LN with `prenorm`) built from the recipe, and an
    optional pooled output (`with_pooler`, default `config.pooler`; the MLM model has none, as in
    BERT's code): BERT's and FNet's tanh pooler over token 0 (`classifier_pooling="cls"`) or the
    mean of the real tokens ("mean")."""

    def __init__(self, config: ModelConfig, with_pooler: bool | None = None):
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        layer = (
            (lambda i: PreNormLayer(config, i, "encoder")) if config.prenorm else (lambda i: PostNormLayer(config, i))
        )
        self.layers = nn.ModuleList(layer(i) for i in range(config.n_layers))
        # pre-LN (`prenorm`, an option; BERT and the papers are post-LN): the stream is normalised once at the end
        self.final_norm = nn.LayerNorm(config.d_model, eps=config.norm_eps) if config.prenorm else None
        self.pools = config.pooler if with_pooler is None else with_pooler
        # BERT's pooler (Dense + tanh on token 0, trained by NSP in the papers); mean pooling reads the
        # tokens' mean directly: a fresh tanh layer on it slowed and destabilised fine-tuning (QUALITY.md, demo)
        cls = self.pools and config.classifier_pooling == "cls"
        self.pooler = nn.Linear(config.d_model, config.d_model) if cls else None
        init_bert_weights(self, config.init_std)

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> ModelOutput:
        """input_ids (B, T); attention_mask (B, T) 1 for real tokens, 0 for padding."""
        x = self.embeddings(input_ids, token_type_ids)
        mask = attention_mask.bool() if attention_mask is not None else None
        ctx = MixContext(key_padding_mask=mask, token_ids=input_ids)
        aux: dict[str, torch.Tensor] = {}
        for layer in self.layers:
            x, layer_aux = layer(x, ctx)
            add_aux(aux, layer_aux)
        if self.final_norm is not None:
            x = self.final_norm(x)
        pooled = self.pool(x, attention_mask) if self.pools else None
        return ModelOutput(hidden=x, pooled=pooled, aux_losses=aux)

    def pool(self, x: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """(B, T, d) -> (B, d): tanh(Dense(token 0)), or the mean over real tokens (all without a mask)."""
        if self.pooler is not None:
            return torch.tanh(self.pooler(x[:, 0]))
        if attention_mask is None:
            return x.mean(1)
        keep = attention_mask[:, :, None].to(x.dtype)  # (B, T, 1)
        return (x * keep).sum(1) / keep.sum(1).clamp(min=1)


class MLMHead(nn.Module):
    """Dense(d_model -> d_emb), activation, LayerNorm, then the tied word embedding plus a bias."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.dense = nn.Linear(config.d_model, config.embedding_dim)
        self.act = activation_fn(config.activation)
        self.norm = nn.LayerNorm(config.embedding_dim, eps=config.norm_eps)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.decoder = None if config.tie_word_embeddings else nn.Linear(config.embedding_dim, config.vocab_size, False)

    def forward(self, x: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.act(self.dense(x)))
        weight = word_embeddings if self.decoder is None else self.decoder.weight
        return F.linear(h, weight, self.bias)  # (B, T, vocab)


class BertForMaskedLM(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.encoder = BertEncoder(config, with_pooler=False)
        self.mlm = MLMHead(config)
        init_bert_weights(self.mlm, config.init_std)

    def forward(
        self, input_ids, token_type_ids=None, attention_mask=None, labels=None, masked_only: bool = True
    ) -> ModelOutput:
        """labels (B, T): target ids at masked positions, -100 elsewhere.

        With labels and `masked_only` (the default), the head runs on the labelled positions only, as
        BERT's and FNet's pre-training code do (`masked_lm_positions`): `logits` is then (N, vocab)
        for the N positions where labels != -100, in row-major order. Otherwise (B, T, vocab)."""
        out = self.encoder(input_ids, token_type_ids, attention_mask)
        word = self.encoder.embeddings.word.weight
        if labels is not None and masked_only:
            picked = labels != -100  # (B, T)
            out.logits = self.mlm(out.hidden[picked], word)  # (N, vocab)
            out.loss = F.cross_entropy(out.logits.float(), labels[picked])
            return out
        out.logits = self.mlm(out.hidden, word)
        if labels is not None:
            out.loss = F.cross_entropy(out.logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100)
        return out


class BertForSequenceClassification(nn.Module):
    """Pooled output (token 0, or the tokens' mean: `classifier_pooling`) -> dropout ->
    Linear(num_labels); cross-entropy, or MSE when num_labels == 1."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        if not config.pooler:
            raise ValueError("head 'classify' needs pooler=True (it classifies the pooled token 0)")
        self.config = config
        self.encoder = BertEncoder(config)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(config.d_model, config.num_labels)
        init_bert_weights(self.classifier, config.init_std)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, labels=None) -> ModelOutput:
        out = self.encoder(input_ids, token_type_ids, attention_mask)
        out.logits = self.classifier(self.dropout(out.pooled))  # (B, num_labels)
        if labels is not None:
            if self.config.num_labels == 1:
                out.loss = F.mse_loss(out.logits.squeeze(-1).float(), labels.float())
            else:
                out.loss = F.cross_entropy(out.logits.float(), labels)
        return out


def init_bert_weights(module: nn.Module, std: float) -> None:
    """BERT init: normal(std) weights and embeddings, zero biases, unit LayerNorm."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding | LearnedPositions):
            nn.init.normal_(m.weight, std=std)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
