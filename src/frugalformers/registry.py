"""The names a `ModelConfig` may use, and the registries that map mixer and feed-forward names to
the builders a stack calls (`models.recipe` fills them with the built-in blocks; a user's block
registers under a new name with `register_mixer` / `register_ffn`).

This module sits below `config` and imports nothing from the package, so `config` validates names
without importing any model code: a built-in name is valid before its builder is loaded.
"""

from __future__ import annotations

from collections.abc import Callable

Builder = Callable[..., object]  # (config, layer index, stack) -> nn.Module

MIXER_NAMES = (
    "attention",
    "fourier",
    "linear",
    "random",
    "identity",
    "local_attention",
    "transient_global",
    "routed_attention",
)
FFN_NAMES = ("dense", "moe", "routed", "word_experts")
ATTENTION_IMPLS = ("sdpa", "reference")
ACTIVATIONS = ("gelu", "gelu_new", "relu", "silu")

# name -> builder; None until the module that builds it is imported (`frugalformers.models`)
MIXERS: dict[str, Builder | None] = dict.fromkeys(MIXER_NAMES)
FFNS: dict[str, Builder | None] = dict.fromkeys(FFN_NAMES)


def register_mixer(name: str) -> Callable[[Builder], Builder]:
    def deco(fn: Builder) -> Builder:
        MIXERS[name] = fn
        return fn

    return deco


def register_ffn(name: str) -> Callable[[Builder], Builder]:
    def deco(fn: Builder) -> Builder:
        FFNS[name] = fn
        return fn

    return deco


def builder(registry: dict[str, Builder | None], kind: str, name: str) -> Builder:
    fn = registry.get(name)
    if fn is None:
        raise ValueError(f"{kind} {name!r} has no builder: import the module that registers it")
    return fn
