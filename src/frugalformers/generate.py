"""Text generation with static KV caches: greedy, temperature, top-k and top-p sampling, for the
decoder family (left-padded prompt batches) and the T5 family (cached cross-attention K/V).

`compile=True` compiles the one-token decode step (`torch.compile`, static shapes; on CUDA with
`mode="reduce-overhead"`, i.e. replayed from a CUDA graph: gpt-fast's method). Every decode step
has the same shapes (the cache is static, the position is a tensor), so it compiles once per
batch size and cache length; the prompt's prefill stays eager. Compiling costs tens of seconds,
so it pays for long generations and large batches; the eager path is the default and the fallback.
"""

from __future__ import annotations

import warnings

import torch


def sample_next(
    logits: torch.Tensor,
    temperature: float = 0.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Next token ids (B,) from logits (B, V): greedy when temperature == 0."""
    if temperature <= 0:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    if top_k > 0:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) > top_p  # keep the smallest prefix with mass >= top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = logits.softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate(
    model,
    prompts: list[list[int]],
    max_new_tokens: int,
    eos_id: int | None = None,
    pad_id: int = 0,
    temperature: float = 0.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int = 0,
    word_ids: list[list[int]] | None = None,
    compile: bool = False,
    decoder_word_id=None,
    decode_options: dict | None = None,
) -> list[list[int]]:
    """New tokens for each prompt (stopping after `eos_id`, which is kept). `word_ids`: the prompts'
    routing ids, for encoders with MoWE layers. `decoder_word_id`: for T5 decoders with MoWE
    layers, a function from one row's decoder inputs so far to the routing id of the last one
    (`tok.last_word_id`). `compile`: compile the decode step (see above). `decode_options`: what
    `setup_cache` takes besides the sizes, e.g. {"grouped_decode": "matmul"} (`models.decoding`)."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    family = model.config.family
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    was_training = model.training
    model.eval()
    try:
        common = (model, prompts, max_new_tokens, pad_id, device, (temperature, top_k, top_p, gen), eos_id)
        if family == "decoder":
            out = _generate_decoder(*common, compile, decode_options or {})
        elif family == "t5":
            out = _generate_t5(*common, word_ids, compile, decoder_word_id, decode_options or {})
        else:
            raise ValueError(f"family {family!r} does not generate text; use a decoder or T5 model")
    finally:
        model.clear_cache()
        model.train(was_training)
    return out


def compiled_step(fn, device: torch.device, enabled: bool):
    """`fn` compiled for one-token decoding (CUDA graphs on CUDA), or `fn` itself.

    Eager fallback: compiling happens on the first call; if it fails (no compiler toolchain, a
    backend error), a warning names the error and every step runs eagerly. Errors after a first
    successful compiled call are real and propagate."""
    if not enabled:
        return fn
    mode = "reduce-overhead" if device.type == "cuda" else None
    compiled = torch.compile(fn, mode=mode, dynamic=False, fullgraph=False)
    state = {"tried": False, "eager": False}

    run = compiled

    def step(*args, **kwargs):
        if state["eager"]:
            return fn(*args, **kwargs)
        if state["tried"]:
            return run(*args, **kwargs)
        state["tried"] = True
        try:
            return run(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - any compile failure falls back; eager re-raises real errors
            first_line = str(e).splitlines()[0][:200] if str(e) else ""
            warnings.warn(
                f"compiling the decode step failed ({type(e).__name__}: {first_line}); decoding eagerly",
                RuntimeWarning,
                stacklevel=2,
            )
            state["eager"] = True
            return fn(*args, **kwargs)

    return step


def _trim(rows: torch.Tensor, eos_id: int | None) -> list[list[int]]:
    out = []
    for row in rows.tolist():
        if eos_id is not None and eos_id in row:
            row = row[: row.index(eos_id) + 1]
        out.append(row)
    return out


def _generate_decoder(model, prompts, max_new, pad_id, device, sampling, eos_id, compile=False, decode_options=None):
    B, P = len(prompts), max(len(p) for p in prompts)
    S = P + max_new
    ids = torch.full((B, P), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros((B, S), dtype=torch.bool, device=device)
    for i, p in enumerate(prompts):  # left padding: every prompt ends at position P - 1
        ids[i, P - len(p) :] = torch.tensor(p, device=device)
        mask[i, P - len(p) : P] = True
    model.setup_cache(B, S, device=device, **(decode_options or {}))
    positions = (mask[:, :P].long().cumsum(1) - 1).clamp(min=0)  # (B, P): per-row position ids
    logits = model(ids, attention_mask=mask, positions=positions, input_pos=torch.arange(P, device=device)).logits
    last_pos = positions[:, -1]
    step = compiled_step(model, device, compile)
    new = []
    done = torch.zeros(B, dtype=torch.bool, device=device)
    for t in range(max_new):
        nxt = sample_next(logits[:, -1], *sampling)
        nxt = torch.where(done, torch.full_like(nxt, pad_id), nxt)
        new.append(nxt)
        if eos_id is not None:
            done |= nxt == eos_id
            if bool(done.all()):
                break
        if t == max_new - 1:
            break
        mask[:, P + t] = True
        last_pos = last_pos + 1
        logits = step(
            nxt[:, None],
            attention_mask=mask,
            positions=last_pos[:, None],
            input_pos=torch.tensor([P + t], device=device),
        ).logits.clone()  # a CUDA-graph output is overwritten by the next replay
    return _trim(torch.stack(new, 1), eos_id)


def _generate_t5(
    model,
    prompts,
    max_new,
    pad_id,
    device,
    sampling,
    eos_id,
    word_ids=None,
    compile=False,
    decoder_word_id=None,
    decode_options=None,
):
    B, P = len(prompts), max(len(p) for p in prompts)
    ids = torch.full((B, P), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros((B, P), dtype=torch.long, device=device)
    for i, p in enumerate(prompts):
        ids[i, : len(p)] = torch.tensor(p, device=device)
        mask[i, : len(p)] = 1
    words = None
    if word_ids is not None:
        words = torch.zeros((B, P), dtype=torch.long, device=device)
        for i, w in enumerate(word_ids):
            words[i, : len(w)] = torch.tensor(w, device=device)
    memory, _ = model.encode(ids, mask, words)
    kv = model.cross_kv(memory)
    model.setup_cache(B, max_new, device=device, **(decode_options or {}))
    tok = torch.full((B,), model.config.decoder_start_token_id, dtype=torch.long, device=device)
    step = compiled_step(model.decode_step, device, compile)
    new = []
    done = torch.zeros(B, dtype=torch.bool, device=device)
    if decoder_word_id is None and model.config.routes_decoder_words():
        raise ValueError("this model has MoWE decoder layers: pass decoder_word_id (e.g. tok.last_word_id)")
    # each row's decoder inputs so far (only MoWE decoders need them: a host copy per step)
    history = [[int(x)] for x in tok.tolist()] if decoder_word_id is not None else None
    for t in range(max_new):
        dw = None
        if decoder_word_id is not None:
            dw = torch.tensor([[decoder_word_id(h)] for h in history], device=device)  # (B, 1)
        logits = step(tok[:, None], torch.tensor([t], device=device), mask.bool(), kv, None, dw).clone()
        tok = sample_next(logits[:, -1], *sampling)
        tok = torch.where(done, torch.full_like(tok, pad_id), tok)
        new.append(tok)
        if history is not None:
            for h, x in zip(history, tok.tolist(), strict=True):
                h.append(x)
        if eos_id is not None:
            done |= tok == eos_id
            if bool(done.all()):
                break
    return _trim(torch.stack(new, 1), eos_id)
