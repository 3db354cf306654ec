"""Hugging Face configs <-> ours: `BertConfig` / `FNetConfig`, `T5Config` / `LongT5Config` and
`LlamaConfig` (and GPT-2's) to a `ModelConfig` and back; what cannot be expressed is an error."""

from __future__ import annotations

from frugalformers.config import ModelConfig


def is_fnet(config: ModelConfig) -> bool:
    """A BERT-family model with Fourier mixing in every layer: Hugging Face's `FNetModel`."""
    return config.family == "bert" and all(config.layer_mixer(i) == "fourier" for i in range(config.n_layers))


def config_from_hf(hf_config, head: str | None = None) -> ModelConfig:
    """Our config for a Hugging Face `BertConfig`, `T5Config` or `LlamaConfig`."""
    t = hf_config.model_type
    if t in ("bert", "fnet"):
        if getattr(hf_config, "position_embedding_type", "absolute") != "absolute":
            raise ValueError(
                f"position_embedding_type={hf_config.position_embedding_type!r}: only 'absolute' is supported"
            )
        d = hf_config.hidden_size
        fnet = t == "fnet"
        kinds = dict(mixer="fourier", embedding_projection=True) if fnet else {}
        return ModelConfig(
            family="bert",
            head=head or "base",
            vocab_size=hf_config.vocab_size,
            d_model=d,
            n_layers=hf_config.num_hidden_layers,
            # FNet has no attention: any head count dividing d_model will do
            n_heads=next(h for h in (12, 16, 8, 4, 2, 1) if d % h == 0) if fnet else hf_config.num_attention_heads,
            d_ff=hf_config.intermediate_size,
            activation=hf_config.hidden_act,
            norm="layernorm",
            norm_eps=hf_config.layer_norm_eps,
            max_seq_len=hf_config.max_position_embeddings,
            type_vocab_size=hf_config.type_vocab_size,
            dropout=hf_config.hidden_dropout_prob,
            attention_dropout=getattr(hf_config, "attention_probs_dropout_prob", 0.0),
            pad_token_id=getattr(hf_config, "pad_token_id", None) or 0,
            num_labels=getattr(hf_config, "num_labels", 2),
            **kinds,
        )
    if t in ("t5", "longt5"):
        extra = {}
        if t == "longt5":
            kind = hf_config.encoder_attention_type
            if kind not in ("local", "transient-global"):
                raise ValueError(f"LongT5 encoder_attention_type={kind!r} is not 'local' or 'transient-global'")
            extra = (
                dict(
                    mixer="transient_global",
                    options={"local_radius": hf_config.local_radius, "global_block": hf_config.global_block_size},
                )
                if kind == "transient-global"
                else dict(mixer="local_attention", options={"local_radius": hf_config.local_radius})
            )
        proj = hf_config.feed_forward_proj
        gated = proj.startswith("gated-")
        act = proj.split("-")[-1]
        act = "gelu_new" if act == "gelu" and gated else act  # HF maps gated-gelu to gelu_new
        return ModelConfig(
            family="t5",
            head=head or "seq2seq",
            vocab_size=hf_config.vocab_size,
            d_model=hf_config.d_model,
            head_dim=hf_config.d_kv,
            d_ff=hf_config.d_ff,
            n_layers=hf_config.num_layers,
            n_decoder_layers=hf_config.num_decoder_layers,
            n_heads=hf_config.num_heads,
            activation=act,
            gated_ffn=gated,
            bias=False,
            norm="rmsnorm",
            norm_eps=hf_config.layer_norm_epsilon,
            position="relative",
            relative_buckets=hf_config.relative_attention_num_buckets,
            relative_max_distance=hf_config.relative_attention_max_distance,
            attention_scale=1.0,
            dropout=hf_config.dropout_rate,
            attention_dropout=0.0,
            # transformers >= 5 always ties T5's lm_head to `shared` and keeps the T5-vs-T5.1.1
            # difference (scale the decoder output by d_model^-0.5, or not) in scale_decoder_outputs
            tie_word_embeddings=bool(getattr(hf_config, "scale_decoder_outputs", hf_config.tie_word_embeddings)),
            pad_token_id=getattr(hf_config, "pad_token_id", None) or 0,
            decoder_start_token_id=getattr(hf_config, "decoder_start_token_id", None) or 0,
            max_seq_len=16384,
            **extra,
        )
    if t == "gpt2":
        return ModelConfig(
            family="decoder",
            head="lm",
            vocab_size=hf_config.vocab_size,
            d_model=hf_config.n_embd,
            n_layers=hf_config.n_layer,
            n_heads=hf_config.n_head,
            d_ff=hf_config.n_inner or 4 * hf_config.n_embd,
            activation=hf_config.activation_function,
            gated_ffn=False,
            bias=True,
            norm="layernorm",
            norm_eps=hf_config.layer_norm_epsilon,
            position="learned",
            max_seq_len=hf_config.n_positions,
            tie_word_embeddings=True,
            dropout=0.0,
            attention_dropout=0.0,
        )
    if t == "llama":
        if getattr(hf_config, "attention_bias", False) != getattr(hf_config, "mlp_bias", False):
            raise ValueError("attention_bias and mlp_bias differ; frugalformers uses one `bias` flag for both")
        rope = getattr(hf_config, "rope_parameters", None) or getattr(hf_config, "rope_scaling", None) or {}
        if rope.get("rope_type", "default") != "default":
            raise ValueError(f"rope_type={rope.get('rope_type')!r} is not supported; only the default rotary")
        theta = rope.get("rope_theta", getattr(hf_config, "rope_theta", 10000.0))
        head_dim = getattr(hf_config, "head_dim", None) or hf_config.hidden_size // hf_config.num_attention_heads
        return ModelConfig(
            family="decoder",
            head="lm",
            vocab_size=hf_config.vocab_size,
            d_model=hf_config.hidden_size,
            n_layers=hf_config.num_hidden_layers,
            n_heads=hf_config.num_attention_heads,
            n_kv_heads=hf_config.num_key_value_heads,
            head_dim=head_dim,
            d_ff=hf_config.intermediate_size,
            activation=hf_config.hidden_act,
            gated_ffn=True,
            bias=bool(getattr(hf_config, "attention_bias", False)),
            norm="rmsnorm",
            norm_eps=hf_config.rms_norm_eps,
            position="rotary",
            rope_theta=float(theta),
            max_seq_len=hf_config.max_position_embeddings,
            tie_word_embeddings=hf_config.tie_word_embeddings,
            dropout=0.0,
            attention_dropout=float(getattr(hf_config, "attention_dropout", 0.0)),
            pad_token_id=hf_config.pad_token_id if hf_config.pad_token_id is not None else 0,
        )
    raise ValueError(f"Hugging Face model_type={t!r} is not supported; use bert, t5 or llama")


def hf_config_from(config: ModelConfig):
    """A Hugging Face config for our `config` (inverse of `config_from_hf`)."""
    import transformers

    if config.family == "bert":
        fnet = is_fnet(config)
        if fnet and config.embedding_dim != config.d_model:
            raise ValueError("FNetConfig has one width for embeddings and layers; d_emb must equal d_model")
        if not fnet and (config.embedding_projection or set(config.mixers()) != {"attention"}):
            raise ValueError(
                "BertConfig has attention in every layer and no embedding projection: export this "
                "model in our format (save), or use an all-Fourier model for FNetConfig"
            )
        shared = dict(
            vocab_size=config.vocab_size,
            hidden_size=config.d_model,
            num_hidden_layers=config.n_layers,
            intermediate_size=config.d_ff,
            hidden_act=config.activation,
            hidden_dropout_prob=config.dropout,
            max_position_embeddings=config.max_seq_len,
            type_vocab_size=config.type_vocab_size,
            layer_norm_eps=config.norm_eps,
            pad_token_id=config.pad_token_id,
            num_labels=config.num_labels,
        )
        if fnet:
            return transformers.FNetConfig(**shared)
        return transformers.BertConfig(
            num_attention_heads=config.n_heads, attention_probs_dropout_prob=config.attention_dropout, **shared
        )
    if config.family == "t5":
        if (
            config.n_heads not in {config.kv_heads, config.encoder_kv_heads, config.cross_kv_heads}
            or len({config.kv_heads, config.encoder_kv_heads, config.cross_kv_heads}) > 1
        ):
            raise ValueError("T5Config has no kv-head setting: export grouped-kv T5 models in our format")
        act = "gelu" if config.activation == "gelu_new" and config.gated_ffn else config.activation
        return transformers.T5Config(
            vocab_size=config.vocab_size,
            d_model=config.d_model,
            d_kv=config.resolved_head_dim,
            d_ff=config.d_ff,
            num_layers=config.n_layers,
            num_decoder_layers=config.decoder_layers,
            num_heads=config.n_heads,
            relative_attention_num_buckets=config.relative_buckets,
            relative_attention_max_distance=config.relative_max_distance,
            dropout_rate=config.dropout,
            layer_norm_epsilon=config.norm_eps,
            feed_forward_proj=("gated-" if config.gated_ffn else "") + act,
            tie_word_embeddings=config.tie_word_embeddings,
            pad_token_id=config.pad_token_id,
            decoder_start_token_id=config.decoder_start_token_id,
        )
    if config.norm != "rmsnorm" or config.position != "rotary" or not config.gated_ffn:
        raise ValueError(
            f"LlamaConfig needs RMSNorm, rotary positions and a gated FFN; this decoder has norm={config.norm!r}, "
            f"position={config.position!r}, gated_ffn={config.gated_ffn} (GPT-2 style, whose Hugging Face format "
            f"has no kv-head setting): save it in our format (`--format ours`)"
        )
    return transformers.LlamaConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.d_model,
        intermediate_size=config.d_ff,
        num_hidden_layers=config.n_layers,
        num_attention_heads=config.n_heads,
        num_key_value_heads=config.kv_heads,
        head_dim=config.resolved_head_dim,
        hidden_act=config.activation,
        max_position_embeddings=config.max_seq_len,
        rms_norm_eps=config.norm_eps,
        rope_theta=config.rope_theta,
        attention_bias=config.bias,
        mlp_bias=config.bias,
        tie_word_embeddings=config.tie_word_embeddings,
        pad_token_id=config.pad_token_id,
    )
